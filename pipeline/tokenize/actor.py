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

import importlib.metadata
from collections.abc import Callable, Collection
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from audio_codecs.base import CodecInfo, CodecSpec, EncodedSegment
from audio_codecs.registry import load_codec
from pipeline.shard_reader import ShardSampleRow
from pipeline.tokenize.rows import ChainRow

_PCM16_SCALE = 32768.0

Encoder = Callable[[list[ChainRow]], list[EncodedSegment]]


def code_version() -> str:
    """This code's name and version, recorded with every token row."""
    return f"mucodec-pipeline {importlib.metadata.version('mucodec-pipeline')}"


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
    previous pool's `ChainRow`s."""
    if "tokenizer" in batch.column_names:
        return ChainRow.from_table(batch)
    return [ChainRow.audio(row) for row in ShardSampleRow.from_table(batch)]


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

    Args:
        spec: Which codec to load.
        device: "auto" (CUDA when the actor has a GPU, else CPU), "cpu", "cuda", ...
        torch_threads: Threads torch may use in this actor (CPU share of the pool).
        skip_shards: Shards this codec already has.
        keep_audio: Whether a later pool needs the audio rows.
    """

    def __init__(
        self,
        spec: CodecSpec,
        device: str = "auto",
        torch_threads: int = 1,
        skip_shards: Collection[str] = (),
        keep_audio: bool = False,
    ) -> None:
        torch.set_num_threads(torch_threads)
        self.codec = load_codec(spec, resolve_device(device))
        self.version = code_version()
        self.skip_shards = frozenset(skip_shards)
        self.keep_audio = keep_audio

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Add this codec's rows to a batch (see `chain_step`)."""
        rows = chain_step(
            chain_rows(batch), self._encode, self.codec.info, self.version,
            skip_shards=self.skip_shards, keep_audio=self.keep_audio,
        )  # fmt: skip
        return ChainRow.to_table(rows)

    def _encode(self, rows: list[ChainRow]) -> list[EncodedSegment]:
        segments = [
            torch.from_numpy(np.frombuffer(r.pcm, dtype=np.int16).reshape(-1, 2).T.copy())
            .float()
            .div_(_PCM16_SCALE)
            for r in rows
        ]
        # The shard stores gain * source audio: the codec undoes the gain (and a codec that
        # normalises per song, as MuCodec does, uses the song's pre-gain peak).
        return self.codec.encode(
            segments,
            song_peaks=[float(r.song_peak) for r in rows],
            gains=[float(r.gain) for r in rows],
        )
