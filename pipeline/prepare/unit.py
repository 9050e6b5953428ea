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
from dataclasses import dataclass, field
from typing import Any, Self

from core.config import JsonConfig
from pipeline.claims import Fence
from pipeline.errors import EnvironmentFailure, describe, with_retries
from pipeline.io import StorageOptions, completed_markers, filesystem, join, marker_name, write_json
from pipeline.path_text import path_text
from pipeline.prepare.audio import DecodeError
from pipeline.prepare.dsp import TARGET_RATE
from pipeline.prepare.metering import SongQuality
from pipeline.prepare.records import Reject, SongSource
from pipeline.prepare.segment import SegmentConfig, SegmentSpan, plan_segments
from pipeline.prepare.shards import ShardInfo, ShardLimits, ShardWriter
from pipeline.prepare.song import (
    MAX_LYRICS_BYTES,
    DecodedSong,
    decode_song,
    encode_samples,
    read_lyrics,
    segment_key,
)
from pipeline.quality.filters.base import Drop
from pipeline.quality.filters.config import FilterConfig
from pipeline.quality.splits import SplitConfig, with_split
from schemas.manifest import SHARDS_DIR
from schemas.run import UNIT_MARKER_VERSION, check_unit_marker, marker_where

UNITS_DIR = "_prepare/units"
FILTER_STAGE = "filter"  # The rejects' stage of what a quality filter dropped.


@dataclass(frozen=True)
class PrepareConfig(JsonConfig):
    """Everything that shapes prepare's output; recorded in the run manifest.

    Its `to_dict` (less `scratch_dir` and `storage`) is the `config` of the manifest and of
    the run claim, so its keys are part of the on-disk format.
    """

    segment: SegmentConfig = field(default_factory=SegmentConfig)
    shard_limits: ShardLimits = field(default_factory=ShardLimits)
    songs_per_unit: int = 32
    flac_level: int = 5  # libFLAC's default: ~3x faster to encode than 8, ~2% larger.
    max_lyrics_bytes: int = MAX_LYRICS_BYTES  # Larger lyrics, file or inline, are rejected.
    filters: FilterConfig = field(default_factory=FilterConfig)
    splits: SplitConfig = field(default_factory=SplitConfig)
    # Near-duplicates: "report" groups them, "keep-best" keeps one per group (curation.py).
    dedupe: str = "report"
    dedupe_against: str | None = None  # An earlier prepare output to check new songs against.
    # Where a run may read beyond its input (local paths, URL prefixes): --allow-root.
    allowed_roots: tuple[str, ...] = ()
    scratch_dir: str | None = None  # Local disk for spools and shards in progress.
    storage: StorageOptions = field(default_factory=StorageOptions)


@dataclass(frozen=True)
class Unit(JsonConfig):
    """A fixed group of songs: prepare's unit of work and restart granularity.

    Attributes:
        index: Position of the unit in the run; names its shards and its marker.
        songs: The unit's songs, in song id order.
    """

    index: int
    songs: tuple[SongSource, ...]

    @property
    def fingerprint(self) -> str:
        """Hex sha256 of the unit's songs (one sorted-key JSON line each).

        A marker with another fingerprint belongs to other songs: the unit is redone.
        """
        lines = "\n".join(json.dumps(s.to_dict(), sort_keys=True) for s in self.songs)
        return hashlib.sha256(lines.encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Builds the unit from `to_dict` output.

        JsonConfig turns a list back into a tuple but leaves its items as dicts: the songs
        are rebuilt here.
        """
        songs = tuple(SongSource.from_dict(s) for s in data["songs"])
        return super().from_dict({**data, "songs": songs})


@dataclass
class UnitResult(JsonConfig):
    """A finished unit; its JSON is the unit's completion marker.

    The marker's wire shape is the fields plus `version` (UNIT_MARKER_VERSION), so that a
    reader refuses a marker written in a format it does not know.
    """

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
    # One row per measured song and segment (`quality_row`), kept or dropped: quality.parquet.
    quality: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The marker's JSON-ready dict: the fields and the marker format `version`."""
        return {**super().to_dict(), "version": UNIT_MARKER_VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Reads a marker written by `to_dict`.

        Raises:
            UnsupportedVersion: if the marker's `version` is not UNIT_MARKER_VERSION.
            ValueError: if it has a key that is not a field.
        """
        check_unit_marker(data, marker_where(UNITS_DIR, data))
        fields = {k: v for k, v in data.items() if k != "version"}
        # JsonConfig leaves the items of a list as dicts: the records are rebuilt here.
        fields["shards"] = [ShardInfo.from_dict(s) for s in fields["shards"]]
        fields["rejects"] = [Reject.from_dict(r) for r in fields["rejects"]]
        return super().from_dict(fields)


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
    """Cuts the sorted songs into units of `songs_per_unit`, in order.

    Returns:
        The units, indexed from 0; the last one may be smaller.
    """
    return [
        Unit(index, songs[start : start + songs_per_unit])
        for index, start in enumerate(range(0, len(songs), songs_per_unit))
    ]


def marker_path(output_path: str, unit_index: int) -> str:
    """The completion marker of unit `unit_index` under `output_path`."""
    return join(output_path, UNITS_DIR, marker_name(unit_index))


def load_markers(
    output_url: str, units: list[Unit], storage: StorageOptions
) -> dict[int, UnitResult]:
    """Results of the units that completed with exactly their current songs."""
    fs, root = filesystem(output_url, storage)
    return completed_markers(fs, join(root, UNITS_DIR), units, UnitResult.from_dict)


def load_marker(output_url: str, unit: Unit, storage: StorageOptions) -> UnitResult | None:
    """The unit's result if it completed with exactly these songs, else None."""
    return load_markers(output_url, [unit], storage).get(unit.index)


def prepare_unit(
    unit: Unit,
    config: PrepareConfig,
    output_url: str,
    fence: Fence,
    skip: dict[str, Reject] | None = None,
    on_song: Callable[[str, str], None] = lambda event, song_id: None,
) -> UnitResult:
    """Prepare every song of the unit into its shards; per-song problems become rejects.

    Each shard, the removal of shards an earlier attempt left and the marker happen only
    while the output's claim carries `fence`'s run (else Superseded is raised). `skip`
    holds songs already known to be unusable (a decoder that crashed the process on them);
    they are rejected without being touched. `on_song("start" | "done", song_id)` lets a
    supervisor know which song is in flight.
    """
    started = time.perf_counter()
    skip = skip or {}
    fs, root = filesystem(output_url, config.storage)
    guard = fence.guard(fs)
    scratch = tempfile.mkdtemp(prefix=f"prepare-unit-{unit.index:06d}-", dir=config.scratch_dir)
    writer = ShardWriter(fs, join(root, SHARDS_DIR), unit.index, config.shard_limits, scratch,
                         guard)  # fmt: skip
    rejects: list[Reject] = []
    quality: list[dict[str, Any]] = []
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
            quality.extend(outcome.quality)
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
    guard()  # A superseded unit must not delete the shards of the run that replaced it.
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
        quality=quality,
    )
    write_json(fs, marker_path(root, unit.index), result.to_dict(), guard)
    return result


@dataclass
class _SongOutcome:
    segments: int = 0
    audio_seconds: float = 0.0
    rejects: list[Reject] = field(default_factory=list)
    quality: list[dict[str, Any]] = field(default_factory=list)


def _prepare_song(
    song: SongSource, config: PrepareConfig, writer: ShardWriter, scratch: str
) -> _SongOutcome:
    outcome = _SongOutcome()
    lyrics, lyrics_reject = read_lyrics(song, config.storage, config.max_lyrics_bytes)
    if lyrics_reject:
        outcome.rejects.append(lyrics_reject)
    song = with_split(song, config.splits)
    window = config.segment.segment_frames
    try:
        decoded = with_retries(
            lambda: decode_song(song, lyrics, config.storage, scratch, window), song.source
        )
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
        quality = decoded.meter.finish(spans)
        kept = _filtered(decoded, spans, quality, config.filters, outcome)
        for sample in encode_samples(decoded, kept, quality, config.flac_level / 8):
            writer.write(sample)
        outcome.segments = len(kept)
        outcome.audio_seconds = decoded.source_duration_s if kept else 0.0
        return outcome
    finally:
        decoded.discard()


def _filtered(
    decoded: DecodedSong, spans: list[SegmentSpan], quality: SongQuality, config: FilterConfig,
    outcome: _SongOutcome,
) -> list[SegmentSpan]:  # fmt: skip
    """The spans the filters keep; each drop becomes a reject, each measure a quality row.

    Segment filters go first: a song left with no segment (all digital silence, say) is
    dropped by them, segment by segment. Song filters then judge the song by its measures
    over every planned segment, and drop all of it or none.
    """
    song = decoded.song
    filters = config.filters()
    drops = {
        span.index: next((d for f in filters if f.level == "segment"
                          and (d := f.check(quality.segments[span.index]))), None)
        for span in spans
    }  # fmt: skip
    song_drop = None
    if any(drop is None for drop in drops.values()):
        song_drop = next(
            (d for f in filters if f.level == "song" and (d := f.check(quality.song))), None
        )
    kept: list[SegmentSpan] = []
    for span in spans:
        drop = song_drop or drops[span.index]
        if drop is None:
            kept.append(span)
        elif song_drop is None:
            outcome.rejects.append(_filter_reject(song, drop, span))
        measures = quality.segments[span.index]
        outcome.quality.append(
            quality_row(song, "segment", measures, span.frames / TARGET_RATE, drop, span.index)
        )
    if song_drop:
        outcome.rejects.append(_filter_reject(song, song_drop, None))
    # A song with no segment left is dropped by the rule that dropped its first segment.
    song_drop = song_drop or (None if kept else drops[spans[0].index])
    kept_seconds = sum(span.frames for span in kept) / TARGET_RATE
    outcome.quality.append(quality_row(song, "song", quality.song, kept_seconds, song_drop))
    return kept


def _filter_reject(song: SongSource, drop: Drop, span: SegmentSpan | None) -> Reject:
    where = "" if span is None else f"segment {span.index} at {span.start / TARGET_RATE:.2f} s: "
    return Reject(
        song.source, FILTER_STAGE, f"{drop.rule}: {where}{drop.reason}", song.song_id,
        rule=drop.rule, value=drop.value, segment_index=None if span is None else span.index,
    )  # fmt: skip


def quality_row(
    song: SongSource, level: str, measures: dict[str, float | None], kept_seconds: float,
    drop: Drop | None, segment_index: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A row of quality.parquet: who, which split, whether kept, and the measures."""
    return {
        "level": level,
        "song_id": song.song_id,
        "key": None if segment_index is None else segment_key(song.song_id, segment_index),
        "segment_index": segment_index,
        "source": path_text(song.source),
        "source_sha256": song.source_sha256,
        "artist": song.artist,
        "split": song.split,
        "duplicate_group": song.duplicate_group,
        "kept": drop is None,
        "dropped_by": None if drop is None else drop.rule,
        "kept_seconds": kept_seconds if drop is None else 0.0,
        **measures,
    }


def _remove_stale_shards(fs, shards_dir: str, unit_index: int, keep: set[str]) -> None:
    """Delete shards an earlier, different attempt at this unit left beyond this one's."""
    fs.invalidate_cache(shards_dir)
    for path in fs.glob(join(shards_dir, f"{unit_index:06d}-*.tar")):
        if path.rsplit("/", 1)[-1] not in keep:
            fs.rm_file(path)
