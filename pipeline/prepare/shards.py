"""WebDataset shard writing: plain POSIX tar files, deterministic names and bytes.

A sample's members are written back to back (WebDataset groups consecutive members by key).
Headers carry fixed owner, mode and mtime, so a rerun writes byte-identical shards. Each shard
is assembled in a local scratch file and moved into place atomically once complete; the shard
is rolled over when the next sample would pass the byte or sample limit.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass

import fsspec

from core.config import JsonConfig
from pipeline.io import join, upload_file
from pipeline.prepare.song import Sample

_BLOCK = tarfile.BLOCKSIZE
_END_OF_ARCHIVE = b"\0" * (2 * _BLOCK)


@dataclass(frozen=True)
class ShardLimits(JsonConfig):
    """Roll over to a new shard past either limit (a single sample always fits)."""

    max_samples: int = 100_000
    max_bytes: int = 1_000_000_000


@dataclass(frozen=True)
class ShardInfo(JsonConfig):
    """A finished shard, as the unit marker and the manifest list it.

    Attributes:
        name: File name under `shards/` (`<unit>-<part>.tar`).
        samples: Segments in the shard.
        bytes: Size of the tar file in bytes.
    """

    name: str
    samples: int
    bytes: int


def shard_name(unit_index: int, part: int) -> str:
    """The file name of part `part` of unit `unit_index`'s shards: `UUUUUU-PPPP.tar`."""
    return f"{unit_index:06d}-{part:04d}.tar"


def _member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    # PAX, not plain USTAR: USTAR holds 100-character names, and keys run to 126 + extension.
    # Names that fit get the very same USTAR header; longer ones get a pax "path" record.
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    padding = (-len(data)) % _BLOCK
    return header + data + b"\0" * padding


class ShardWriter:
    """Writes one unit's samples into shards named `<unit>-<part>.tar` under `shards_url`.

    `fence()` is called right before each finished shard takes its name (`pipeline.io`).
    """

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        shards_dir: str,
        unit_index: int,
        limits: ShardLimits,
        scratch_dir: str,
        fence: Callable[[], None],
    ) -> None:
        self._fs = fs
        self._fence = fence
        self._dir = shards_dir
        self._unit = unit_index
        self._limits = limits
        self._scratch = scratch_dir
        self._handle = None
        self._local_path = ""
        self._samples = 0
        self._bytes = 0
        self.finished: list[ShardInfo] = []

    def write(self, sample: Sample) -> None:
        """Appends `sample` to the current shard, first rolling over past a limit."""
        payload = b"".join(_member(f"{sample.key}.{ext}", data) for ext, data in sample.members)
        if self._handle is not None and (
            self._samples + 1 > self._limits.max_samples
            or self._bytes + len(payload) + len(_END_OF_ARCHIVE) > self._limits.max_bytes
        ):
            self._finish_shard()
        if self._handle is None:
            # Not mkstemp: its 0600 mode would survive the rename and leave the shards
            # unreadable to other users. The scratch dir is private to this attempt.
            name = shard_name(self._unit, len(self.finished))
            self._local_path = os.path.join(self._scratch, f"{name}.partial")
            self._handle = open(self._local_path, "xb")  # noqa: SIM115 (closed in _finish_shard)
        self._handle.write(payload)
        self._samples += 1
        self._bytes += len(payload)

    def close(self) -> list[ShardInfo]:
        """Finish the open shard; returns every shard this writer completed."""
        if self._handle is not None:
            self._finish_shard()
        return self.finished

    def abort(self) -> None:
        """Drops the shard in progress; finished shards stay."""
        if self._handle is not None:
            self._handle.close()
            os.remove(self._local_path)
            self._handle = None

    def _finish_shard(self) -> None:
        assert self._handle is not None
        self._handle.write(_END_OF_ARCHIVE)
        self._handle.close()
        self._handle = None
        name = shard_name(self._unit, len(self.finished))
        size = os.path.getsize(self._local_path)
        upload_file(self._fs, self._local_path, join(self._dir, name), self._fence)
        self.finished.append(ShardInfo(name=name, samples=self._samples, bytes=size))
        self._samples = 0
        self._bytes = 0
