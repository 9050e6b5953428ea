"""Token parts read back for an export: one `ExportSample` per segment, every codec's codes.

The codecs' tables of one tokenize output share their parts (the same shards per part), and
each part's rows are sorted by key, so part n of every codec is read side by side, a few
rows at a time, and joined by key. A segment some codec lacks (rejected by it) is left out
and counted. Lyric lines carry each codec's frames, placed from their times by
`lyric_frames`, the function that wrote version 4 tables' frames (version 3 tables stored
only the times).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.export.audio import ShardAudio
from pipeline.io import StorageOptions, filesystem
from schemas.tokens import check_tokens_schema_version, lyric_frames

ROWS_PER_READ = 64  # Rows decoded at a time per codec: what bounds the export's memory.
_COLUMNS = [
    "key", "song_id", "segment_index", "start_s", "duration_s", "channels", "n_codebooks",
    "n_frames", "codes", "lyrics", "lyrics_text", "source", "shard", "token_rate",
]  # fmt: skip


@dataclass(frozen=True)
class CodecCodes:
    """One codec's codes of a segment: `[n_frames, channels * n_codebooks]` uint16 (time
    first, as loaders stack frames), at `frame_rate` frames per second."""

    codes: np.ndarray
    frame_rate: float


@dataclass(frozen=True)
class ExportSample:
    """A segment as every export format sees it.

    Attributes:
        lyrics: Lines `{t, text, end, frames: {codec: [first, last]}}`, `t` and `end` in
            seconds from the segment's start (`end`: the next line's start, or the end).
        codes: Codec name -> its codes.
        split: The sample's split, as prepare assigned it ("train" for tables from before
            splits).
        flac: The segment's audio as prepare stored it (FLAC), when the export carries it.
    """

    key: str
    song_id: str
    segment_index: int
    start_s: float
    duration_s: float
    lyrics_text: str
    source: str
    shard: str
    lyrics: list[dict[str, Any]] = field(default_factory=list)
    codes: dict[str, CodecCodes] = field(default_factory=dict)
    split: str = "train"
    flac: bytes = b""  # The segment's audio, when the export carries it.


@dataclass
class JoinCounts:
    """Rows read from the first codec's part, and those left out for a codec lacking them."""

    read: int = 0
    left_out: int = 0


def part_samples(
    part_urls: dict[str, str],
    storage: StorageOptions,
    counts: JoinCounts | None = None,
    audio: ShardAudio | None = None,
) -> Iterator[ExportSample]:
    """The samples of one part of several codecs' tables (`codec -> part file`), by key,
    with their audio from `audio` when given."""
    counts = counts or JoinCounts()
    streams = {codec: _rows(url, storage) for codec, url in part_urls.items()}
    first, *others = part_urls
    pending: dict[str, dict[str, Any] | None] = {codec: next(streams[codec], None)
                                                 for codec in others}  # fmt: skip
    for row in streams[first]:
        counts.read += 1
        rows = {first: row}
        for codec in others:
            while pending[codec] is not None and pending[codec]["key"] < row["key"]:
                pending[codec] = next(streams[codec], None)
            if pending[codec] is not None and pending[codec]["key"] == row["key"]:
                rows[codec] = pending[codec]
        if len(rows) < len(part_urls):
            counts.left_out += 1
            continue
        sample = _sample(rows)
        if audio is not None:
            sample = replace(sample, flac=audio.flac(sample.shard, sample.key))
        yield sample


def _rows(url: str, storage: StorageOptions) -> Iterator[dict[str, Any]]:
    """A part's rows as dicts, `ROWS_PER_READ` at a time; `codes` flat uint16 (numpy), never
    Python lists: a segment of DAC's is 55,000 codes."""
    fs, path = filesystem(url, storage)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        check_tokens_schema_version(parquet.schema_arrow, url)
        # Tables from before splits (version 3 and 4) have no `split`: their rows are train.
        columns = [*_COLUMNS, *(["split"] if "split" in parquet.schema_arrow.names else [])]
        for batch in parquet.iter_batches(batch_size=ROWS_PER_READ, columns=columns):
            codes = batch.column("codes")
            rows = batch.drop_columns(["codes"]).to_pylist()
            for index, row in enumerate(rows):
                flat = codes[index].values.flatten().to_numpy(zero_copy_only=False)
                yield {**row, "codes": flat}


def _sample(rows: dict[str, dict[str, Any]]) -> ExportSample:
    base = next(iter(rows.values()))
    codes, frames = {}, {}
    for codec, row in rows.items():
        stream = np.asarray(row["codes"], dtype=np.uint16).reshape(
            int(row["channels"]) * int(row["n_codebooks"]), int(row["n_frames"])
        )
        codes[codec] = CodecCodes(np.ascontiguousarray(stream.T), float(row["token_rate"]))
        lines = [{"t": line["t"], "text": line["text"]} for line in row["lyrics"]]
        frames[codec] = lyric_frames(lines, float(row["token_rate"]), int(row["n_frames"]))
    starts = [line["t"] for line in base["lyrics"]]
    ends = [*starts[1:], base["duration_s"]][: len(starts)]
    lyrics = [
        {"t": line["t"], "text": line["text"], "end": max(line["t"], end),
         "frames": {codec: [placed[i]["first_frame"], placed[i]["last_frame"]]
                    for codec, placed in frames.items()}}
        for i, (line, end) in enumerate(zip(base["lyrics"], ends, strict=True))
    ]  # fmt: skip
    return ExportSample(
        key=base["key"], song_id=base["song_id"], segment_index=int(base["segment_index"]),
        start_s=float(base["start_s"]), duration_s=float(base["duration_s"]),
        lyrics_text=base["lyrics_text"], source=base["source"], shard=base["shard"],
        lyrics=lyrics, codes=codes, split=base.get("split") or "train",
    )  # fmt: skip


def provenance(part_url: str, storage: StorageOptions) -> dict[str, Any]:
    """The codec provenance a token part records in its schema metadata (`codec`), with the
    codebooks per stream of its first row (`n_codebooks`)."""
    fs, path = filesystem(part_url, storage)
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        metadata = parquet.schema_arrow.metadata or {}
        first = parquet.read_row_group(0, columns=["n_codebooks"]).column(0)[0].as_py()
    return {**json.loads(metadata.get(b"codec", b"{}")), "n_codebooks": first}
