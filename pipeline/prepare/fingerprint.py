"""Source fingerprints: the sha256 of every audio file, so the same bytes enter a run once.

A catalog can hold one recording under two paths (a symlink, a copy), and each would yield
every segment again under another song id. Between discovery and unit planning, a Ray Data
pass streams every source file through sha256 on the workers (the driver reads none of
them); the driver then keeps one song of each set of songs with equal bytes and rejects the
others as `duplicate of <song_id>`. The decision is taken once, over the whole catalog,
before songs are cut into units, so it cannot depend on units, workers or scheduling. Local
paths are resolved first: paths with the same real path are one file, hashed once.

Which song keeps the bytes (and its id), in this order, so that adding a link or a copy never
renames a song that an earlier run prepared:
1. a song read at its real path beats one reached through a symlink (a link is the duplicate
   of its target, and a link to a file outside the tree keeps the song when it is the only
   way in);
2. among those, the song whose file kept these bytes in the last run at this output (the
   cache remembers it), so a copy or a hard link added later is the duplicate, wherever it
   sorts;
3. else the first in sorted source order (a fresh output, or the keeper has gone).
A hard link is a file of its own here (another real path): rules 2 and 3 decide.

Only regular files are read (`open_regular`), so a FIFO, a socket or a device that took a
song's name is a reject and never blocks or streams without end.

The hashes are cached in `_prepare/fingerprints.parquet` under the output, keyed by the file
hashed (real path or URL) with its size and version (mtime and inode, or the object store's
ETag): a rerun stats every file but hashes only new or changed ones. A filesystem that
reports no version is never trusted from the cache.

A file that cannot be read (missing, permission) is a reject. When the environment fails
(after `with_retries`), the song keeps its place with no hash and its unit is left
unfinished for a rerun (docs/reliability.md): its place keeps every unit's membership, but
a later copy of that file goes undetected until the rerun hashes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import EnvironmentFailure, describe, is_environment_failure, with_retries
from pipeline.io import StorageOptions, exists, filesystem, join
from pipeline.parquet_files import read_parquet, write_parquet
from pipeline.path_text import path_text
from pipeline.prepare.entries import NotARegularFile, entry_error_reason, open_regular
from pipeline.prepare.records import Reject, SongSource
from pipeline.prepare.survey import survey_file

log = logging.getLogger(__name__)

FINGERPRINTS_FILE = "_prepare/fingerprints.parquet"
FINGERPRINTS_VERSION = 2  # 2: `kept`, the files whose songs kept their bytes.
STAGE = "fingerprint"  # The rejects' stage: turned away for their bytes, not their names.
# Empty files are all "the same bytes", but each is its own defect: decoding rejects it as
# empty, naming that file, rather than as a duplicate of another empty one.
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# What changes when a file is rewritten, by the names fsspec filesystems report it under.
VERSION_FIELDS = ("ETag", "etag", "mtime", "ino", "LastModified", "generation")
# Files per Ray task: large enough to amortise a task, small enough to spread a small catalog.
MAX_FILES_PER_TASK = 64
READ_BLOCK_BYTES = 8 << 20  # Sequential 8 MiB ranges from object stores.

CACHE_SCHEMA = pa.schema(
    [
        pa.field("target", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("version", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("kept", pa.bool_(), nullable=False),
    ],
    metadata={"schema": "prepare-fingerprints", "schema_version": str(FINGERPRINTS_VERSION)},
)
# One row per file back from the workers; `error` set means no hash. `target` is the file's
# name as text (pipeline/path_text.py): the key of the cache and of the results.
RESULT_SCHEMA = pa.schema(
    [
        pa.field("target", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("version", pa.string()),
        pa.field("sha256", pa.string()),
        pa.field("error", pa.string()),
        pa.field("environment", pa.bool_()),  # The error is the environment's, not the file's.
        pa.field("hashed", pa.bool_()),  # Read and hashed now, not taken from the cache.
        # The file's survey (pipeline/prepare/survey.py), when it had none: its row as JSON.
        pa.field("survey", pa.string()),
        pa.field("survey_seconds", pa.float64()),
    ]
)


@dataclass(frozen=True)
class Fingerprints:
    """The songs that go on to units, and what the pass turned away or could not finish.

    `songs` keeps discovery's order and carries `source_sha256`, except the songs in
    `unhashed` (song_id -> why the environment kept their file from being hashed).
    """

    songs: tuple[SongSource, ...]
    rejects: tuple[Reject, ...]
    unhashed: dict[str, str]
    hashed: int  # Files read and hashed this run; the others came from the cache.
    seconds: float
    surveys: dict[str, dict[str, Any]]  # sha256 -> survey row, of the files surveyed now.
    survey_seconds: float  # Of the pass's seconds (summed over workers), spent surveying.


def hash_target(source: str) -> str:
    """The file whose bytes `source` names: its real path when local, else the URL itself."""
    if fsspec.utils.get_protocol(source) != "file":
        return source
    return os.path.realpath(fsspec.core.strip_protocol(source))


def through_link(source: str) -> bool:
    """Whether a local `source` reaches its file through a symlink (its real path differs)."""
    if fsspec.utils.get_protocol(source) != "file":
        return False
    return hash_target(source) != os.path.abspath(fsspec.core.strip_protocol(source))


def file_version(info: dict[str, Any]) -> str:
    """What the filesystem says changes with the file's content; "" when it says nothing."""
    return " ".join(f"{name}={info[name]}" for name in VERSION_FIELDS if info.get(name))


def fingerprint_file(
    target: str, cached: tuple[int, str, str] | None, storage: StorageOptions
) -> tuple[int, str, str, bool]:
    """Identifies one source file by its bytes, reusing a cached hash while the file is unchanged.

    Args:
        target: The file's URL (a local name may hold surrogate escapes).
        cached: (size in bytes, version, hex sha256) from the output's cache, or None.
        storage: How to reach the file.

    Returns:
        (size in bytes, version, hex sha256, whether the file was read and hashed now).

    Raises:
        NotARegularFile: if a local `target` is a directory, FIFO, socket or device.
    """
    fs, path = filesystem(target, storage)
    fs.invalidate_cache(path)  # A worker's cached listing must not hide a rewritten file.
    info = fs.info(path)
    size, version = int(info["size"]), file_version(info)
    if version and cached is not None and cached[:2] == (size, version):
        return size, version, cached[2], False
    with open_regular(fs, path, block_size=READ_BLOCK_BYTES) as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return size, version, digest, True


def fingerprint_batch(batch: pa.Table, storage: StorageOptions) -> pa.Table:
    """Ray Data map_batches: files (with their cache rows) -> RESULT_SCHEMA rows.

    A file whose bytes changed, or whose bytes have no survey yet, is surveyed in the same
    task: one pass over the catalog's files, not two.
    """
    rows = [_fingerprint_row(row, storage) for row in batch.to_pylist()]
    return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)


def _fingerprint_row(row: dict[str, Any], storage: StorageOptions) -> dict[str, Any]:
    """One file's result; failures come back as data (one raised error fails the Ray job)."""
    target = os.fsdecode(row["location"])
    cached = None
    if row["cached_sha256"] is not None:
        cached = (row["cached_size"], row["cached_version"], row["cached_sha256"])
    result: dict[str, Any] = {
        "target": row["target"],
        "error": None,
        "environment": False,
        "hashed": False,
    }
    try:
        size, version, digest, hashed = with_retries(
            lambda: fingerprint_file(target, cached, storage), path_text(target)
        )
    except EnvironmentFailure as error:
        return {**result, "error": str(error), "environment": True}
    except NotARegularFile as error:
        return {**result, "error": str(error)}
    except OSError as error:  # Missing, permission, a symlink loop: nothing to read as audio.
        return {**result, "error": path_text(entry_error_reason(error, target))}
    result |= {"size": size, "version": version, "sha256": digest, "hashed": hashed}
    if not (hashed or row["unsurveyed"]) or digest == _EMPTY_SHA256:
        return result
    started = time.perf_counter()
    try:
        survey = with_retries(lambda: survey_file(target, storage), path_text(target))
    except EnvironmentFailure as error:
        return {**result, "sha256": None, "error": str(error), "environment": True}
    seconds = time.perf_counter() - started
    return {**result, "survey": json.dumps(survey), "survey_seconds": seconds}


def fingerprint_songs(
    songs: tuple[SongSource, ...],
    output_url: str,
    storage: StorageOptions,
    *,
    surveyed: frozenset[str] = frozenset(),
    concurrency: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Fingerprints:
    """Hashes the songs' files on Ray (cached hashes reused), then drops the duplicates.

    Args:
        songs: The discovered songs.
        output_url: The prepare output, which holds the fingerprint cache.
        storage: How to reach the files and the output.
        surveyed: The sha256s that have a survey: a file whose cached hash is one of them
            is not surveyed again.
        concurrency: Hashing tasks at once; None lets Ray decide.
        progress: Called as `progress(files_done, files)` as the pass goes.

    Returns:
        The songs with their `source_sha256`, the duplicates' rejects, the songs whose file
        the environment kept from being hashed or surveyed, the new surveys, and the pass's
        counts.
    """
    import ray  # Imported here so the plain functions above stay usable without Ray.

    started = time.perf_counter()
    fs, root = filesystem(output_url, storage)
    cache_path = join(root, FINGERPRINTS_FILE)
    locations = {song.song_id: hash_target(song.source) for song in songs}
    targets = {song_id: path_text(location) for song_id, location in locations.items()}
    files = sorted({path_text(location): location for location in locations.values()}.items())
    texts = [text for text, _ in files]
    cache = _read_cache(fs, cache_path)
    if progress:
        progress(0, len(files))
    results: list[pa.Table] = []
    try:
        if files:
            requests = _with_cached(files, cache, surveyed)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            per_task = max(1, min(MAX_FILES_PER_TASK, math.ceil(len(files) / (4 * cpus))))
            blocks = [requests.slice(start, per_task) for start in range(0, len(files), per_task)]
            dataset = ray.data.from_arrow(blocks).map_batches(
                fingerprint_batch,
                batch_format="pyarrow",
                batch_size=None,
                fn_kwargs={"storage": storage},
                num_cpus=1,
                concurrency=concurrency,
            )
            done = 0
            for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                results.append(batch)
                done += batch.num_rows
                if progress:
                    progress(done, len(files))
    except BaseException:
        # Even a pass cut short keeps what it hashed: a rerun must not read it all again.
        _write_cache(fs, cache_path, cache, _concatenated(results), texts, keepers=None)
        raise
    fresh = _concatenated(results)
    by_target = {row["target"]: row for row in fresh.to_pylist()}
    kept, rejects, unhashed = resolve_duplicates(songs, targets, by_target, _kept(cache))
    keepers = {targets[song.song_id] for song in kept}
    _write_cache(fs, cache_path, cache, fresh, texts, keepers)
    hashed = sum(1 for row in by_target.values() if row["hashed"])
    seconds = time.perf_counter() - started
    log.info("fingerprints: %d files, %d hashed (the rest cached), %d rejects, %.1f s",
             len(files), hashed, len(rejects), seconds)  # fmt: skip
    surveys = {row["sha256"]: json.loads(row["survey"])
               for row in by_target.values() if row["survey"]}  # fmt: skip
    survey_seconds = sum(row["survey_seconds"] or 0.0 for row in by_target.values())
    return Fingerprints(kept, rejects, unhashed, hashed, seconds, surveys, survey_seconds)


def resolve_duplicates(
    songs: tuple[SongSource, ...],
    targets: dict[str, str],
    results: dict[str, dict[str, Any]],
    kept_before: frozenset[str] = frozenset(),
) -> tuple[tuple[SongSource, ...], tuple[Reject, ...], dict[str, str]]:
    """Keep one song of each sha256 by the rules in this module's docstring; reject the others.

    `targets` maps song_id -> file hashed, `results` file -> its RESULT_SCHEMA row,
    `kept_before` the files whose songs kept their bytes in the last run. Returns the kept
    songs in their given order with `source_sha256` set (none for unhashed songs), the
    rejects in the order decided, and the unhashed songs with the environment's error.
    """

    def precedence(song: SongSource) -> tuple[bool, bool, str, str]:
        kept_last_time = targets[song.song_id] in kept_before
        return through_link(song.source), not kept_last_time, song.source, song.song_id

    first_of: dict[str, str] = {}  # sha256 -> song_id that keeps it.
    kept: dict[str, SongSource] = {}
    rejects: list[Reject] = []
    unhashed: dict[str, str] = {}
    for song in sorted(songs, key=precedence):
        result = results[targets[song.song_id]]
        if result["environment"]:
            unhashed[song.song_id] = result["error"]
            kept[song.song_id] = song
        elif result["error"]:
            rejects.append(Reject(song.source, STAGE, result["error"], song.song_id))
        elif result["sha256"] == _EMPTY_SHA256:
            kept[song.song_id] = replace(song, source_sha256=result["sha256"])
        elif (first := first_of.setdefault(result["sha256"], song.song_id)) != song.song_id:
            rejects.append(Reject(song.source, STAGE, f"duplicate of {first}", song.song_id))
        else:
            kept[song.song_id] = replace(song, source_sha256=result["sha256"])
    ordered = tuple(kept[s.song_id] for s in songs if s.song_id in kept)
    return ordered, tuple(rejects), unhashed


def _with_cached(
    files: list[tuple[str, str]], cache: pa.Table, surveyed: frozenset[str]
) -> pa.Table:
    """The files to fingerprint (text, exact name), each with its cache row (null when none)
    and whether its cached bytes lack a survey."""
    cached = cache.select(["target", "size", "version", "sha256"]).rename_columns(
        ["target", "cached_size", "cached_version", "cached_sha256"]
    )
    wanted = pa.table(
        {
            "target": pa.array([text for text, _ in files], pa.string()),
            "location": pa.array([os.fsencode(name) for _, name in files], pa.binary()),
        }
    )
    joined = wanted.join(cached, "target", join_type="left outer").sort_by("target")
    unsurveyed = [sha not in surveyed for sha in joined.column("cached_sha256").to_pylist()]
    return joined.append_column("unsurveyed", pa.array(unsurveyed, pa.bool_()))


def _concatenated(results: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(results) if results else RESULT_SCHEMA.empty_table()


def _kept(cache: pa.Table) -> frozenset[str]:
    """The files whose songs kept their bytes in the last run."""
    return frozenset(cache.filter(cache.column("kept")).column("target").to_pylist())


def _read_cache(fs: fsspec.AbstractFileSystem, path: str) -> pa.Table:
    """The cache, or an empty one when it is absent, unreadable or of an unknown version.

    A version 1 cache (before `kept`) still gives its hashes; it knows no keepers.
    """
    if not exists(fs, path):
        return CACHE_SCHEMA.empty_table()
    try:
        table = read_parquet(fs, path)
    except (OSError, pa.ArrowException) as error:
        if is_environment_failure(error):
            raise  # Not the cache's fault: reading the whole catalog again is no answer.
        log.warning("ignoring the fingerprint cache %s: %s", path, describe(error))
        return CACHE_SCHEMA.empty_table()
    version = (table.schema.metadata or {}).get(b"schema_version")
    if version == b"1":
        table = table.append_column("kept", pa.array([False] * table.num_rows, pa.bool_()))
    elif version != str(FINGERPRINTS_VERSION).encode():
        log.warning("ignoring the fingerprint cache %s: another version", path)
        return CACHE_SCHEMA.empty_table()
    return table.select(CACHE_SCHEMA.names).cast(CACHE_SCHEMA)


def _write_cache(
    fs: fsspec.AbstractFileSystem,
    path: str,
    cache: pa.Table,
    fresh: pa.Table,
    files: list[str],
    keepers: set[str] | None,
) -> None:
    """This run's hashes, plus the old entries of current files it did not confirm.

    `keepers` are the files whose songs kept their bytes this run; None when the run did
    not get to decide (its pass was cut short): the last run's keepers stay.
    """
    confirmed = fresh.filter(pc.is_valid(fresh.column("sha256")))
    current = pc.is_in(cache.column("target"), value_set=pa.array(files, pa.string()))
    replaced = pc.is_in(
        cache.column("target"), value_set=confirmed.column("target").combine_chunks()
    )
    old = cache.filter(pc.and_(current, pc.invert(replaced)))
    targets = confirmed.column("target").to_pylist()
    kept = _kept(cache) if keepers is None else keepers
    new = confirmed.select(["target", "size", "version", "sha256"]).append_column(
        "kept", pa.array([target in kept for target in targets], pa.bool_())
    )
    write_parquet(fs, path, pa.concat_tables([old, new.cast(CACHE_SCHEMA)]).sort_by("target"))
