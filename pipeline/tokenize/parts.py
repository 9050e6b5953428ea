"""Token parts: a fixed group of input shards -> one Parquet file of token rows + a marker.

Parts are tokenize's restart unit. Shards are sorted by name and cut into groups of
`shards_per_part`, so a part's membership and name are the same on every run. Rows reach
the driver in any order (the actor pool finishes batches out of order); a shard is finished
when its SHARD_END row has arrived together with the number of rows it announced, and a
part is written (atomically, rows sorted by key) once all its shards are finished. A
SHARD_FAILED row leaves its part unwritten.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.config import JsonConfig
from pipeline.io import (
    StorageOptions,
    atomic_write,
    completed_markers,
    filesystem,
    join,
    marker_name,
    to_url,
    write_json,
)
from pipeline.path_text import path_text
from pipeline.prepare.records import Reject
from pipeline.shard_reader import SHARD_END, SHARD_FAILED, ShardRef
from pipeline.tokenize.codebook_stats import CodebookHistogram
from pipeline.tokenize.rows import TokenizedRow
from schemas.quality import MEASURE_COLUMNS
from schemas.run import PART_MARKER_VERSION, check_part_marker, marker_where
from schemas.tokens import (
    LYRIC_LINE,
    QUALITY,
    TOKENS_SCHEMA,
    lyric_frames,
    validate_tokens_table,
)

TOKENS_DIR = "tokens"
PARTS_DIR = "_tokenize/parts"
PROVENANCE_COLUMNS = (
    "tokenizer", "tokenizer_config", "encoder_layer", "checkpoint_sha256", "token_rate",
    "code_version", "codec_preset", "codec_mode", "sample_rate", "channels", "bitrate_kbps",
)  # fmt: skip


@dataclass(frozen=True)
class Part:
    """Tokenize's unit of work: `shards` in, `tokens/<name>` and one marker out."""

    index: int
    shards: tuple[ShardRef, ...]

    @property
    def name(self) -> str:
        """The part's file name under `tokens/`."""
        return f"part-{self.index:06d}.parquet"

    @property
    def fingerprint(self) -> str:
        """sha256 of the shards' names and sizes: a marker of other shards is stale."""
        text = "\n".join(f"{s.name} {s.size}" for s in self.shards)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class PartResult(JsonConfig):
    """A written part; its JSON is the part's completion marker."""

    index: int
    fingerprint: str
    file: str
    rows: int
    bytes: int
    tokens: int
    audio_seconds: float
    token_rate: float
    rejects: list[Reject]
    histogram: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The marker's JSON, with its schema version."""
        return {**super().to_dict(), "version": PART_MARKER_VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Parse a marker.

        Raises:
            UnsupportedVersion: The marker has a version this code does not read.
        """
        check_part_marker(data, marker_where(PARTS_DIR, data))
        fields = {k: v for k, v in data.items() if k != "version"}
        # JsonConfig leaves the items of a list as dicts: the rejects are rebuilt here.
        fields["rejects"] = [Reject.from_dict(r) for r in fields["rejects"]]
        return super().from_dict(fields)


def plan_parts(shards: list[ShardRef], shards_per_part: int) -> list[Part]:
    """Sort `shards` by name and cut them into parts of `shards_per_part`, the same every run."""
    ordered = sorted(shards, key=lambda s: s.name)
    return [
        Part(index, tuple(ordered[start : start + shards_per_part]))
        for index, start in enumerate(range(0, len(ordered), shards_per_part))
    ]


def part_marker_path(root: str, index: int) -> str:
    """Where part `index`'s completion marker lives under tokenize's output `root`."""
    return join(root, PARTS_DIR, marker_name(index))


def load_part_markers(fs, root: str, parts: list[Part]) -> dict[int, PartResult]:
    """Results of the parts that completed with exactly their current shards."""
    return completed_markers(fs, join(root, PARTS_DIR), parts, PartResult.from_dict)


def load_part_marker(fs, root: str, part: Part) -> PartResult | None:
    """`part`'s result if it completed with exactly its current shards, else None."""
    return load_part_markers(fs, root, [part]).get(part.index)


@dataclass
class _PartBuffer:
    part: Part
    rows: list[TokenizedRow] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)  # Rows received per shard.
    announced: dict[str, int] = field(default_factory=dict)  # Rows each shard said it has.

    def finished(self) -> bool:
        return len(self.announced) == len(self.part.shards) and all(
            self.seen.get(name, 0) == count for name, count in self.announced.items()
        )


class PartAssembler:
    """Collects tokenized rows per part and writes each part as soon as it is complete.

    `fence()` is called right before a part's file and its marker take their names; it
    raises (pipeline.claims.Superseded) once another run has claimed the output.
    """

    def __init__(
        self, fs, root: str, parts: list[Part], row_group_size: int, fence: Callable[[], None]
    ) -> None:
        self._fs = fs
        self._root = root
        self._fence = fence
        self._row_group_size = row_group_size
        self._buffers = {p.index: _PartBuffer(p) for p in parts}
        self._part_of_shard = {s.name: p.index for p in parts for s in p.shards}
        self.failures: dict[int, str] = {}  # Parts left unwritten, and why.

    def add(self, row: TokenizedRow) -> PartResult | None:
        """Take one row from the actors; returns the part's result if this completed it.

        A SHARD_FAILED row (storage failed while reading a shard) gives up on its part: it
        is recorded in `failures` and left unwritten, so a rerun retries it.
        """
        index = self._part_of_shard[row.shard]
        if index in self.failures:
            return None
        buffer = self._buffers[index]
        if row.kind == SHARD_FAILED:
            self.failures[index] = row.error
            del self._buffers[index]
            return None
        if row.kind == SHARD_END:
            buffer.announced[row.shard] = row.shard_rows
        else:
            buffer.seen[row.shard] = buffer.seen.get(row.shard, 0) + 1
            buffer.rows.append(row)
        if not buffer.finished():
            return None
        del self._buffers[index]
        return self._write(buffer)

    def fail_remaining(self, why: str) -> None:
        """Give up on every part not yet written (the rows feeding them stopped coming)."""
        for index in list(self._buffers):
            self.failures[index] = why
            del self._buffers[index]

    @property
    def unfinished(self) -> list[int]:
        """Indexes of the parts not written: still waiting for rows, or failed."""
        return sorted([*self._buffers, *self.failures])

    def _write(self, buffer: _PartBuffer) -> PartResult:
        part = buffer.part
        good = sorted((r for r in buffer.rows if not r.error), key=lambda r: r.key)
        rejects = [
            Reject(r.shard + (f"#{r.key}" if r.key else ""), "tokenize", r.error)
            for r in buffer.rows
            if r.error
        ]
        table = tokens_table(good)
        validate_tokens_table(table)
        data = io.BytesIO()
        pq.write_table(table, data, row_group_size=self._row_group_size, compression="zstd")
        path = join(self._root, TOKENS_DIR, part.name)
        with atomic_write(self._fs, path, self._fence) as handle:
            handle.write(data.getvalue())
        histogram = None
        for row in good:
            codes = row.decode_codes()
            if histogram is None:
                histogram = CodebookHistogram.empty(codes.shape[0], row.codebook_size)
            histogram.add(codes)
        result = PartResult(
            index=part.index,
            fingerprint=part.fingerprint,
            file=f"{TOKENS_DIR}/{part.name}",
            rows=len(good),
            bytes=len(data.getvalue()),
            tokens=int(sum(r.channels * r.n_codebooks * r.n_frames for r in good)),
            audio_seconds=float(sum(r.duration_s for r in good)),
            token_rate=float(good[0].token_rate) if good else 0.0,
            rejects=rejects,
            histogram=histogram.to_dict() if histogram is not None else {},
        )
        write_json(
            self._fs, part_marker_path(self._root, part.index), result.to_dict(), self._fence
        )
        return result


def tokens_table(rows: list[TokenizedRow]) -> pa.Table:
    """One codec's tokenized samples (as the actors return them) -> a token schema table.

    The schema metadata also holds the rows' provenance as JSON (key `codec`).
    """
    n_codebooks = np.array([r.n_codebooks for r in rows], dtype=np.int32)
    n_code_rows = np.array([r.channels * r.n_codebooks for r in rows], dtype=np.int32)
    n_frames = np.array([r.n_frames for r in rows], dtype=np.int32)
    flat = (
        np.concatenate([np.frombuffer(r.codes, dtype=np.uint16) for r in rows])
        if rows
        else np.zeros(0, dtype=np.uint16)
    )
    inner_offsets = np.concatenate([[0], np.cumsum(np.repeat(n_frames, n_code_rows))])
    outer_offsets = np.concatenate([[0], np.cumsum(n_code_rows)])
    frames = pa.ListArray.from_arrays(pa.array(inner_offsets, pa.int32()), pa.array(flat))
    codes = pa.ListArray.from_arrays(pa.array(outer_offsets, pa.int32()), frames)
    lyrics = pa.array(
        [lyric_frames(json.loads(r.lyrics), r.token_rate, r.n_frames) for r in rows],
        pa.list_(LYRIC_LINE),
    )
    columns = {
        "key": pa.array([r.key for r in rows], pa.string()),
        "song_id": pa.array([r.song_id for r in rows], pa.string()),
        "segment_index": pa.array([r.segment_index for r in rows], pa.int32()),
        "start_s": pa.array([float(r.start_s) for r in rows], pa.float64()),
        "duration_s": pa.array([float(r.duration_s) for r in rows], pa.float64()),
        "n_codebooks": pa.array(n_codebooks, pa.int16()),
        "n_frames": pa.array(n_frames, pa.int32()),
        "codes": codes,
        "lyrics_aligned": pa.array([r.lyrics_aligned for r in rows], pa.bool_()),
        "lyrics": lyrics,
        "lyrics_text": pa.array([r.lyrics_text for r in rows], pa.string()),
        "source": pa.array([path_text(r.source) for r in rows], pa.string()),
        "source_sha256": pa.array([r.source_sha256 for r in rows], pa.string()),
        "shard": pa.array([r.shard for r in rows], pa.string()),
        "scales": pa.array([r.scales for r in rows], pa.list_(pa.float32())),
        "chunk_frames": pa.array([r.chunk_frames for r in rows], pa.list_(pa.int32())),
        "input_db": pa.array([float(r.input_db) for r in rows], pa.float32()),
        "split": pa.array([r.split or None for r in rows], pa.string()),
        "artist": pa.array([path_text(r.artist) or None for r in rows], pa.string()),
        "quality": pa.array([_measures(r.quality) for r in rows], QUALITY),
        "song_quality": pa.array([_measures(r.song_quality) for r in rows], QUALITY),
    }
    for name in PROVENANCE_COLUMNS:
        kind = TOKENS_SCHEMA.field(name).type
        columns[name] = pa.array([getattr(r, name) for r in rows], kind)
    schema = TOKENS_SCHEMA
    if rows:
        codec = {name: getattr(rows[0], name) for name in PROVENANCE_COLUMNS}
        schema = schema.with_metadata({**schema.metadata, b"codec": json.dumps(codec)})
    return pa.table({f.name: columns[f.name] for f in schema}, schema=schema)


def _measures(text: str) -> dict[str, float | None] | None:
    """A row's measures (JSON from the shard) as the QUALITY struct; None when absent."""
    if not text:
        return None
    measures = json.loads(text)
    return {name: measures.get(name) for name in MEASURE_COLUMNS}


def token_files(url: str, storage: StorageOptions | None = None) -> list[str]:
    """The token Parquet files under `url` (a tokenize output, its tokens/ dir, or one file)."""
    fs, path = filesystem(url, storage or StorageOptions())
    if path.endswith(".parquet"):
        return [url]
    # Parts are named part-<n>.parquet; rejects.parquet and markers are not token tables.
    parts = [p for p in sorted(fs.find(path)) if p.rsplit("/", 1)[-1].startswith("part-")]
    return [to_url(fs, p) for p in parts if p.endswith(".parquet")]
