"""Prepare's unit of work: a fixed group of songs -> its shards, rejects and stats.

Units are the restart granularity. Songs are sorted by id and cut into groups of
`songs_per_unit`, so a unit's membership (and so its shard names) is the same on every run.
A unit is complete when its marker exists and carries the fingerprint of the same songs; a
rerun redoes exactly the units without such a marker, overwriting whatever shards an
interrupted attempt left, so nothing is duplicated.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.errors import EnvironmentFailure, describe, with_retries
from pipeline.io import StorageOptions, completed_markers, filesystem, join, marker_name, write_json
from pipeline.prepare.audio import DecodeError
from pipeline.prepare.records import Reject, SongSource
from pipeline.prepare.segment import SegmentConfig, plan_segments
from pipeline.prepare.shards import ShardInfo, ShardLimits, ShardWriter
from pipeline.prepare.song import MAX_LYRICS_BYTES, decode_song, encode_samples, read_lyrics
from schemas.manifest import SHARDS_DIR
from schemas.run import UNIT_MARKER_VERSION, check_unit_marker, marker_where

UNITS_DIR = "_prepare/units"


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that shapes prepare's output; recorded in the run manifest."""

    segment: SegmentConfig = field(default_factory=SegmentConfig)
    shard_limits: ShardLimits = field(default_factory=ShardLimits)
    songs_per_unit: int = 32
    flac_level: int = 5  # libFLAC's default: ~3x faster to encode than 8, ~2% larger.
    max_lyrics_bytes: int = MAX_LYRICS_BYTES  # Larger lyrics, file or inline, are rejected.
    # Where a run may read beyond its input (local paths, URL prefixes): --allow-root.
    allowed_roots: tuple[str, ...] = ()
    scratch_dir: str | None = None  # Local disk for spools and shards in progress.
    storage: StorageOptions = field(default_factory=StorageOptions)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["allowed_roots"] = list(self.allowed_roots)
        data["storage"] = self.storage.to_json()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrepareConfig:
        return cls(
            segment=SegmentConfig(**data["segment"]),
            shard_limits=ShardLimits(**data["shard_limits"]),
            songs_per_unit=data["songs_per_unit"],
            flac_level=data["flac_level"],
            max_lyrics_bytes=data["max_lyrics_bytes"],
            allowed_roots=tuple(data["allowed_roots"]),
            scratch_dir=data["scratch_dir"],
            storage=StorageOptions.from_json(data["storage"]),
        )


@dataclass(frozen=True)
class Unit:
    index: int
    songs: tuple[SongSource, ...]

    @property
    def fingerprint(self) -> str:
        lines = "\n".join(json.dumps(s.to_json(), sort_keys=True) for s in self.songs)
        return hashlib.sha256(lines.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "songs": [s.to_json() for s in self.songs]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        return cls(data["index"], tuple(SongSource.from_json(s) for s in data["songs"]))


@dataclass
class UnitResult:
    """A finished unit; its JSON is the unit's completion marker."""

    index: int
    fingerprint: str
    shards: list[ShardInfo]
    rejects: list[Reject]
    songs: int
    songs_ok: int
    segments: int
    audio_seconds: float  # Source duration of the songs that yielded segments.
    wall_seconds: float
    peak_rss_bytes: int

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = UNIT_MARKER_VERSION
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UnitResult:
        check_unit_marker(data, marker_where(UNITS_DIR, data))
        fields = {k: v for k, v in data.items() if k != "version"}
        fields["shards"] = [ShardInfo(**s) for s in fields["shards"]]
        fields["rejects"] = [Reject.from_json(r) for r in fields["rejects"]]
        return cls(**fields)


def peak_rss_bytes() -> int:
    """This process's peak resident memory.

    Linux's VmHWM restarts at exec; `ru_maxrss` would carry over the high-water mark of the
    process that spawned us (a Ray worker), so it is only the fallback.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def plan_units(songs: tuple[SongSource, ...], songs_per_unit: int) -> list[Unit]:
    return [
        Unit(index, songs[start : start + songs_per_unit])
        for index, start in enumerate(range(0, len(songs), songs_per_unit))
    ]


def marker_path(output_path: str, unit_index: int) -> str:
    return join(output_path, UNITS_DIR, marker_name(unit_index))


def load_markers(
    output_url: str, units: list[Unit], storage: StorageOptions
) -> dict[int, UnitResult]:
    """Results of the units that completed with exactly their current songs."""
    fs, root = filesystem(output_url, storage)
    return completed_markers(fs, join(root, UNITS_DIR), units, UnitResult.from_json)


def load_marker(output_url: str, unit: Unit, storage: StorageOptions) -> UnitResult | None:
    """The unit's result if it completed with exactly these songs, else None."""
    return load_markers(output_url, [unit], storage).get(unit.index)


def prepare_unit(
    unit: Unit,
    config: PrepareConfig,
    output_url: str,
    skip: dict[str, Reject] | None = None,
    on_song: Callable[[str, str], None] = lambda event, song_id: None,
) -> UnitResult:
    """Prepare every song of the unit into its shards; per-song problems become rejects.

    `skip` holds songs already known to be unusable (a decoder that crashed the process on
    them); they are rejected without being touched. `on_song("start" | "done", song_id)`
    lets a supervisor know which song is in flight.
    """
    started = time.perf_counter()
    skip = skip or {}
    fs, root = filesystem(output_url, config.storage)
    scratch = tempfile.mkdtemp(prefix=f"prepare-unit-{unit.index:06d}-", dir=config.scratch_dir)
    writer = ShardWriter(fs, join(root, SHARDS_DIR), unit.index, config.shard_limits, scratch)
    rejects: list[Reject] = []
    songs_ok = segments = 0
    audio_seconds = 0.0
    try:
        for song in unit.songs:
            if song.song_id in skip:
                rejects.append(skip[song.song_id])
                continue
            on_song("start", song.song_id)
            outcome = _prepare_song(song, config, writer, scratch)
            on_song("done", song.song_id)
            rejects.extend(outcome.rejects)
            if outcome.segments:
                songs_ok += 1
                segments += outcome.segments
                audio_seconds += outcome.audio_seconds
        shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _remove_stale_shards(fs, join(root, SHARDS_DIR), unit.index, {s.name for s in shards})
    result = UnitResult(
        index=unit.index,
        fingerprint=unit.fingerprint,
        shards=shards,
        rejects=rejects,
        songs=len(unit.songs),
        songs_ok=songs_ok,
        segments=segments,
        audio_seconds=audio_seconds,
        wall_seconds=time.perf_counter() - started,
        peak_rss_bytes=peak_rss_bytes(),
    )
    write_json(fs, marker_path(root, unit.index), result.to_json())
    return result


@dataclass
class _SongOutcome:
    segments: int = 0
    audio_seconds: float = 0.0
    rejects: list[Reject] = field(default_factory=list)


def _prepare_song(
    song: SongSource, config: PrepareConfig, writer: ShardWriter, scratch: str
) -> _SongOutcome:
    outcome = _SongOutcome()
    lyrics, lyrics_reject = read_lyrics(song, config.storage, config.max_lyrics_bytes)
    if lyrics_reject:
        outcome.rejects.append(lyrics_reject)
    try:
        decoded = with_retries(lambda: decode_song(song, lyrics, config.storage, scratch),
                               song.source)  # fmt: skip
    except DecodeError as error:
        outcome.rejects.append(Reject(song.source, "decode", str(error), song.song_id))
        return outcome
    except EnvironmentFailure:
        raise
    except Exception as error:  # A decoder bug on one file must not stop the unit.
        reason = f"decode failed: {describe(error)}"
        outcome.rejects.append(Reject(song.source, "decode", reason, song.song_id))
        return outcome
    try:
        spans = plan_segments(decoded.frames, config.segment)
        if not spans:
            reason = (
                f"too short: {decoded.source_duration_s:.2f} s gives no segment "
                f"(minimum tail {config.segment.min_tail_seconds:g} s, "
                f"policy {config.segment.tail_policy})"
            )
            outcome.rejects.append(Reject(song.source, "segment", reason, song.song_id))
            return outcome
        for sample in encode_samples(decoded, spans, config.flac_level / 8):
            writer.write(sample)
        outcome.segments = len(spans)
        outcome.audio_seconds = decoded.source_duration_s
        return outcome
    finally:
        decoded.discard()


def _remove_stale_shards(fs, shards_dir: str, unit_index: int, keep: set[str]) -> None:
    """Delete shards an earlier, different attempt at this unit left beyond this one's."""
    fs.invalidate_cache(shards_dir)
    for path in fs.glob(join(shards_dir, f"{unit_index:06d}-*.tar")):
        if path.rsplit("/", 1)[-1] not in keep:
            fs.rm_file(path)
