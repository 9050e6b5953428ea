"""A PyTorch IterableDataset over one codec's token table, yielding (codes, lyrics).

A tokenize output holds one table per codec, `<output>/<codec>/tokens/`; the dataset reads
the one codec it is given (MuCodec by default), for an LM trainer.

Files are split between DataLoader workers (and, if given, distributed ranks) so that every
row is read exactly once per epoch; within a file, row groups stream one at a time, so
memory stays at one row group per worker. `shuffle=True` permutes the file order per epoch
(seeded) and shuffles rows within a bounded buffer.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from audio_codecs.registry import DEFAULT_CODEC
from core.errors import MissingInput
from pipeline.io import StorageOptions, filesystem, join
from pipeline.tokenize.parts import token_files
from schemas.tokens import check_tokens_schema_version

_COLUMNS = [
    "key", "channels", "n_codebooks", "n_frames", "codes", "lyrics_aligned", "lyrics",
    "lyrics_text",
]  # fmt: skip


def codec_tokens_url(url: str, codec: str, storage: StorageOptions | None = None) -> str:
    """Where `codec`'s token parts are: `<url>/<codec>/tokens` when `url` is a tokenize
    output holding that codec, else `url` itself (one codec's output, its tokens/ dir or
    one file)."""
    fs, path = filesystem(url, storage or StorageOptions())
    if not path.endswith(".parquet") and fs.isdir(join(path, codec)):
        return join(url, codec, "tokens")
    return url


class TokenDataset(IterableDataset):
    """Yields `(codes, lyrics)`: codes a LongTensor `[channels * n_codebooks, n_frames]` (row
    `c * n_codebooks + k` is stream c's codebook k), lyrics a dict with `text` (the
    segment's lyrics), `aligned` and `lines` (`[{t, text}]`, t in seconds from the segment
    start).

    Args:
        url: A tokenize output (its `codec` table is read), or one codec's output, its
            tokens/ directory, or one part file.
        codec: Which codec's table of a tokenize output to read.
    """

    def __init__(
        self,
        url: str,
        codec: str = DEFAULT_CODEC,
        *,
        storage: StorageOptions | None = None,
        shuffle: bool = False,
        shuffle_buffer: int = 1024,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.storage = storage or StorageOptions()
        self.codec = codec
        self.files = token_files(codec_tokens_url(url, codec, self.storage), self.storage)
        if not self.files:
            raise MissingInput(f"no token tables under {url}")
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the shuffle order between epochs (like DistributedSampler)."""
        self.epoch = epoch

    def _my_files(self) -> list[str]:
        files = list(self.files)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(files)
        worker = get_worker_info()
        workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        shard = self.rank * workers + worker_id
        return files[shard :: self.world_size * workers]

    def _rows(self) -> Iterator[dict[str, Any]]:
        for url in self._my_files():
            fs, path = filesystem(url, self.storage)
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                check_tokens_schema_version(parquet.schema_arrow, url)
                for group in range(parquet.num_row_groups):
                    yield from parquet.read_row_group(group, columns=_COLUMNS).to_pylist()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        rows = self._rows()
        if self.shuffle:
            rows = _buffered_shuffle(rows, self.shuffle_buffer, self.seed + self.epoch)
        for row in rows:
            codes = torch.from_numpy(np.asarray(row["codes"], dtype=np.int64))
            codes = codes.reshape(row["channels"] * row["n_codebooks"], row["n_frames"])
            lyrics = {
                "text": row["lyrics_text"],
                "aligned": row["lyrics_aligned"],
                "lines": row["lyrics"],
            }
            yield codes, lyrics


def _buffered_shuffle(rows: Iterator[dict], size: int, seed: int) -> Iterator[dict]:
    rng = random.Random(seed)
    buffer: list[dict] = []
    for row in rows:
        buffer.append(row)
        if len(buffer) >= size:
            yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer
