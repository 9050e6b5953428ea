"""The fault soak's bookkeeping: what the corpus must give, and what a finished round lost.

Everything here is pure or reads finished outputs: the expected segments and rejects of the
demo corpus, the accounting of a round against the clean calibration run, and the readers
of a round's rejects and shard keys.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from pipeline.audit import AuditReport, read_shard_keys
from pipeline.errors import ENVIRONMENT_ERRNOS, THROTTLING
from pipeline.io import StorageOptions
from pipeline.shard_reader import find_shards
from testing.demo_corpus import BROKEN_FILE, DEMO_SONGS, demo_segments, scaled_seconds

SPOOL_BYTES_PER_S = 48_000 * 2 * 4  # Prepare spools each song as 48 kHz stereo float32.

# What an environment failure looks like in a reject's reason: the strerror texts and
# "[Errno N]" of every errno pipeline.errors calls environmental, and object-store refusals.
ENVIRONMENT_MARKERS = tuple(
    sorted(
        {os.strerror(n) for n in ENVIRONMENT_ERRNOS}
        | {f"[Errno {n}]" for n in ENVIRONMENT_ERRNOS}
        | set(THROTTLING)
        | {"Service Unavailable", "MemoryError", "TimeoutError", "ConnectionError", "timed out"}
    )
)


# -- what the corpus must give ----------------------------------------------------------------


def expected_segment_count(scale: float) -> int:
    """Segments the demo corpus gives at `scale` under prepare's default segmenting."""
    return sum(demo_segments(scale).values())


def legitimate_rejects(scale: float) -> set[str]:
    """Corpus-relative paths prepare must reject: the broken file and songs too short."""
    return {BROKEN_FILE, *(path for path, count in demo_segments(scale).items() if not count)}


def scratch_disk_bytes(scale: float) -> int:
    """A scratch disk that holds the median song's spool: the longer songs' units fail."""
    durations = sorted(scaled_seconds(s, scale) for s in DEMO_SONGS)
    return int(SPOOL_BYTES_PER_S * durations[len(durations) // 2])


def is_environment_reason(reason: str) -> bool:
    """Whether a reject's `reason` text is an environment failure's."""
    return any(marker in reason for marker in ENVIRONMENT_MARKERS)


# -- round accounting (pure) --------------------------------------------------------------------


@dataclass
class Accounting:
    """What a finished round lost, duplicated or rejected wrongly; empty when all is well.

    Attributes hold the offending keys, files or reject rows, one list per kind of problem.
    """

    lost: list[str] = field(default_factory=list)  # Neither in the tables nor rejected.
    duplicated: list[str] = field(default_factory=list)  # In two shards or two token rows.
    unexpected: list[str] = field(default_factory=list)  # A key the clean run never made.
    damaged: list[str] = field(default_factory=list)  # Shards or tables that cannot be read.
    environment_rejects: list[dict] = field(default_factory=list)
    stray_rejects: list[dict] = field(default_factory=list)  # Other unexpected rejects.
    missing_rejects: list[str] = field(default_factory=list)  # Bad files not rejected.

    @property
    def ok(self) -> bool:
        """True when the round has nothing to account for."""
        return not any(vars(self).values())


def account(
    report: AuditReport,
    shard_keys: Counter,
    expected_keys: set[str],
    prepare_rejects: list[dict],
    tokenize_rejects: list[dict],
    legitimate: set[str],
) -> Accounting:
    """Check a finished round against the clean run.

    `shard_keys` counts every key in the prepared shards; `prepare_rejects` paths are
    relative to the corpus; tokenize must reject nothing (the corpus's audio is all valid).
    """
    rejects = prepare_rejects + tokenize_rejects
    environment = [r for r in rejects if is_environment_reason(r["reason"])]
    stray = [r for r in prepare_rejects if r["path"] not in legitimate] + tokenize_rejects
    return Accounting(
        lost=sorted((expected_keys - set(shard_keys)) | set(report.missing)),
        duplicated=sorted({k for k, n in shard_keys.items() if n > 1} | set(report.duplicated)),
        unexpected=sorted((set(shard_keys) - expected_keys) | set(report.unexpected)),
        damaged=[d.shard for d in report.damaged_shards if not d.rejected]
        + [d.file for d in report.damaged_tables],
        environment_rejects=environment,
        stray_rejects=[r for r in stray if r not in environment],
        missing_rejects=sorted(legitimate - {r["path"] for r in prepare_rejects}),
    )


# -- reading a round's outputs ----------------------------------------------------------------


def read_rejects(path: str, corpus: str | None = None) -> list[dict]:
    """A rejects table's rows (none when absent), paths relative to `corpus` when given."""
    if not os.path.exists(path):
        return []
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        if corpus:
            row["path"] = os.path.relpath(row["path"], corpus)
    return rows


def shard_key_counts(prepared: str) -> tuple[Counter, list[str]]:
    """Every key in the manifest's shards, and files in shards/ the manifest does not list."""
    counts: Counter = Counter()
    shards = find_shards(prepared, StorageOptions())
    for shard in shards:
        counts.update(read_shard_keys(shard, StorageOptions())[0])
    listed = {s.name for s in shards}
    extra = sorted(set(os.listdir(os.path.join(prepared, "shards"))) - listed)
    return counts, extra


def leftover_partials(*roots: str) -> list[str]:
    """Half-written files (`<name>.partial-<pid>`) a complete run should have removed."""
    return [
        os.path.join(folder, name)
        for root in roots
        for folder, _, names in os.walk(root)
        for name in names
        if ".partial" in name
    ]


def median_spool_bytes(prepared: str) -> int:
    """The spool of a clean run's median song: a scratch disk the longer songs overfill."""
    durations: dict[str, float] = {}
    for shard in find_shards(prepared, StorageOptions()):
        with tarfile.open(shard.url) as archive:
            for member in archive:
                if member.name.endswith(".json"):
                    meta = json.load(archive.extractfile(member))
                    durations[meta["song_id"]] = meta["source_duration_s"]
    seconds = sorted(durations.values())
    return int(SPOOL_BYTES_PER_S * seconds[len(seconds) // 2])
