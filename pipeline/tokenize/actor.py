"""The tokenizer actors: one pool per codec, in a chain, each adding its codec's rows.

The shard readers' `ShardSampleRow`s enter the first pool; every pool returns `ChainRow`s
(`pipeline.tokenize.rows`). For each audio row it receives, a pool adds one row of its
codec (the codes of a usable sample; errors and shard-level rows pass through with empty
codes) and, unless it is the last pool, hands the audio row on to the next; rows of the
codecs before it pass through untouched. The driver thus sees every row once per codec.

Shards whose part a codec already finished (`skip_shards`) get no row of that codec: a part
done for some codecs only runs the others. The chain logic is `chain_step`, a plain
function; `TokenizeBatch` is the Ray Data callable around it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from audio_codecs.base import CodecInfo, CodecSpec, EncodedSegment
from audio_codecs.registry import load_codec
from core.version import code_version
from pipeline.shard_reader import ShardSampleRow
from pipeline.tokenize.device_memory import probe_batch
from pipeline.tokenize.rows import ChainRow

Encoder = Callable[[list[ChainRow]], list[EncodedSegment]]


def spec_identity(spec: CodecSpec) -> dict[str, Any]:
    """What decides a codec's codes, as JSON-ready values (the run claim records it)."""
    data = asdict(spec)
    data["options"] = dict(spec.options)
    return data


def resolve_device(device: str) -> torch.device:
    """The device to run on: `device`, or CUDA when available for "auto"."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def chain_rows(batch: pa.Table) -> list[ChainRow]:
    """A pool's input as `ChainRow`s: the readers' `ShardSampleRow`s (first pool) or the
    previous pool's `ChainRow`s.

    The PCM is not copied: each row's `pcm` is a read-only view of the batch's buffer.
    """
    pcm = pcm_views(batch.column("pcm"))
    rows = batch.drop_columns(["pcm"]).to_pylist()
    if "tokenizer" in batch.column_names:
        return [ChainRow(**row, pcm=view) for row, view in zip(rows, pcm, strict=True)]
    return [
        ChainRow.audio(ShardSampleRow(**row, pcm=view)) for row, view in zip(rows, pcm, strict=True)
    ]


def pcm_views(column: pa.ChunkedArray) -> list[memoryview]:
    """Each value of a binary column as a view of the column's own buffer (no copy)."""
    views = []
    for chunk in column.chunks:
        _, offsets, data = chunk.buffers()
        width = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        bounds = np.frombuffer(offsets, width)[chunk.offset : chunk.offset + len(chunk) + 1]
        whole = memoryview(data) if data is not None else memoryview(b"")
        views += [whole[start:end] for start, end in itertools.pairwise(bounds.tolist())]
    return views


def chain_step(
    rows: list[ChainRow],
    encode: Encoder,
    info: CodecInfo,
    version: str,
    *,
    skip_shards: Collection[str] = (),
    keep_audio: bool = True,
) -> list[ChainRow]:
    """One codec's link of the chain: its rows added, the audio rows handed on (or dropped).

    Args:
        rows: A batch: audio rows and rows of earlier codecs, in any mix.
        encode: Encodes usable audio rows, one `EncodedSegment` each, in order.
        info: This codec's provenance.
        version: This code's name and version (`code_version`).
        skip_shards: Shards this codec already has (their part is done): no row for them.
        keep_audio: Hand the audio rows on (False for the last pool).

    Returns:
        For each input row in order: an earlier codec's row as it was; for an audio row,
        this codec's row (unless its shard is skipped), then the audio row if kept.
    """
    skip = set(skip_shards)
    work = [r for r in rows if r.is_audio and r.usable and r.shard not in skip]
    encoded = dict(zip(map(id, work), encode(work) if work else [], strict=True))
    out: list[ChainRow] = []
    for row in rows:
        if not row.is_audio:
            out.append(row)
            continue
        if row.shard not in skip:
            out.append(ChainRow.of(row, info, version, encoded.get(id(row))))
        if keep_audio:
            out.append(row)
    return out


class TokenizeBatch:
    """Ray Data callable class of one codec's pool: loads the codec once, runs `chain_step`.

    Safe to call from two threads at once (the stage does so for a device: one batch's PCM
    is staged while the device encodes the other).

    Args:
        spec: Which codec to load.
        device: "auto" (CUDA when the actor has a GPU, else CPU), "cpu", "cuda", ...
        torch_threads: Threads torch may use in this actor (CPU share of the pool).
        skip_shards: Shards this codec already has.
        keep_audio: Whether a later pool needs the audio rows.
        memory_share: On a GPU, split each batch into encode calls that fit in this share
            of its free memory (`pipeline.tokenize.device_memory`); None: one call per batch.
    """

    def __init__(
        self,
        spec: CodecSpec,
        device: str = "auto",
        torch_threads: int = 1,
        skip_shards: Collection[str] = (),
        keep_audio: bool = False,
        memory_share: float | None = None,
    ) -> None:
        started = time.perf_counter()
        torch.set_num_threads(torch_threads)
        self.codec = load_codec(spec, resolve_device(device))
        # Pinned memory lets the copy to a GPU run without blocking this thread.
        self.pin_memory = self.codec.device.type == "cuda"
        self.version = code_version()
        self.skip_shards = frozenset(skip_shards)
        self.keep_audio = keep_audio
        self.memory_share = memory_share if self.codec.device.type == "cuda" else None
        self.encode_batch: int | None = None  # Segments per encode call (None: the batch).
        self._probing = threading.Lock()
        self.load_seconds = time.perf_counter() - started

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Add this codec's rows to a batch (see `chain_step`), with what they cost."""
        costs = _BatchCosts()
        rows = chain_step(
            chain_rows(batch), lambda work: self._encode(work, costs), self.codec.info,
            self.version, skip_shards=self.skip_shards, keep_audio=self.keep_audio,
        )  # fmt: skip
        name = self.codec.info.codec
        return ChainRow.to_table(
            [costs.on(row, self.load_seconds) if row.tokenizer == name else row for row in rows]
        )

    def _encode(
        self, rows: list[ChainRow], costs: _BatchCosts | None = None
    ) -> list[EncodedSegment]:
        started = time.perf_counter()
        pcm = [self._staged(r.pcm) for r in rows]
        staged = time.perf_counter()
        if self.memory_share is not None:
            with self._probing:
                if self.encode_batch is None:
                    longest = max(p.shape[0] for p in pcm)
                    self.encode_batch = probe_batch(self.codec, self.memory_share, longest)
        step = self.encode_batch or len(rows)
        encoded: list[EncodedSegment] = []
        for start in range(0, len(rows), step):
            part = rows[start : start + step]
            # The shard stores gain * source audio: the codec undoes the gain (and a codec
            # that normalises per song, as MuCodec does, uses the song's pre-gain peak).
            encoded += self.codec.encode_pcm16(
                pcm[start : start + step],
                song_peaks=[float(r.song_peak) for r in part],
                gains=[float(r.gain) for r in part],
            )
        if costs is not None:
            costs.staging_s = (staged - started) / len(rows)
            costs.device_s = (time.perf_counter() - staged) / len(rows)
            costs.encoded_at = time.time()
        return encoded

    def _staged(self, pcm: bytes | memoryview) -> torch.Tensor:
        """The PCM in a tensor of its own, `[L, 2]` int16: the actor's one copy of it."""
        source = np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2)
        staged = torch.empty(source.shape, dtype=torch.int16, pin_memory=self.pin_memory)
        staged.numpy()[...] = source
        return staged


@dataclass
class _BatchCosts:
    """Seconds per segment one call spent staging PCM and in the codec's encode, and when
    the encode returned."""

    staging_s: float = 0.0
    device_s: float = 0.0
    encoded_at: float = 0.0

    def on(self, row: ChainRow, load_s: float) -> ChainRow:
        """`row` (this codec's) with the costs; rows without codes cost nothing."""
        if not row.usable:
            return replace(row, load_s=load_s)
        return replace(row, staging_s=self.staging_s, device_s=self.device_s, load_s=load_s,
                       encoded_at=self.encoded_at)  # fmt: skip
