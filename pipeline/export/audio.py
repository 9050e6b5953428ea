"""A segment's audio fetched from prepare's shards by key, for exports that carry it.

Each shard is indexed once (its members' offsets, read from the tar's headers), then a
segment's FLAC is one seek and one read: the export's rows come in key order, not in the
order of the tar, and holding a shard in memory would not be bounded.
"""

from __future__ import annotations

import tarfile
from collections import OrderedDict

from core.errors import MissingInput
from pipeline.io import StorageOptions, filesystem
from pipeline.shard_reader import find_shards

_INDEXES_KEPT = 4  # Shards whose index stays in memory (a part reads a few at a time).


class ShardAudio:
    """The FLAC member of a sample, by shard name and key, from prepare's output `url`."""

    def __init__(self, url: str, storage: StorageOptions) -> None:
        self.storage = storage
        self.urls = {shard.name: shard.url for shard in find_shards(url, storage)}
        self._indexes: OrderedDict[str, dict[str, tuple[int, int]]] = OrderedDict()

    def flac(self, shard: str, key: str) -> bytes:
        """The sample's FLAC bytes.

        Raises:
            MissingInput: the shard or the sample is not in prepare's output.
        """
        index = self._index(shard)
        if key not in index:
            raise MissingInput(f"{key} is not in shard {shard} of the prepared audio")
        offset, size = index[key]
        fs, path = filesystem(self.urls[shard], self.storage)
        with fs.open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def _index(self, shard: str) -> dict[str, tuple[int, int]]:
        if shard in self._indexes:
            self._indexes.move_to_end(shard)
            return self._indexes[shard]
        if shard not in self.urls:
            raise MissingInput(f"shard {shard} is not in the prepared audio")
        fs, path = filesystem(self.urls[shard], self.storage)
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            index = {
                member.name.rsplit("/", 1)[-1].removesuffix(".flac"): (
                    member.offset_data,
                    member.size,
                )
                for member in tar
                if member.isfile() and member.name.endswith(".flac")
            }
        self._indexes[shard] = index
        if len(self._indexes) > _INDEXES_KEPT:
            self._indexes.popitem(last=False)
        return index
