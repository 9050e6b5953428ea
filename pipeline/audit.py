"""Audit a run: every prepared segment is in each codec's token table exactly once, or rejected.

A tokenize output holds one table per codec (`<output>/<codec>/`); each is audited on its
own against the same shards (read once), and the report is per codec.

The shards are read with tokenize's own reader (`iter_shard_samples`: no audio decoding), so
a sample here is exactly a sample there: regular file members grouped by key; links,
directories and other members are not samples. The tables are read for their keys only.
The report lists what is missing, duplicated or unexpected, and what could not be read:

* `damaged_shards`: shards that cannot be read completely (a tar error part way, or fewer
  samples than prepare's manifest lists: a tar cut at a member boundary reads as a shorter
  complete archive). The samples read before the damage still count.
* `damaged_tables`: token tables, or the rejects table, that cannot be read; their keys are
  unknown, so the samples they hold show as missing too.

`ok` is false when anything is missing, duplicated, unexpected or damaged, with one
exception: a damaged shard that tokenize rejected as a whole (a rejects row whose `path` is
the shard's name alone, written when tokenize's reader hit the damage). The samples past
the damage are unreadable to both, so the audit cannot list them; that row is tokenize's
record of having lost them, and every sample read before it must still be tokenized or
rejected. A shard damaged without such a row (after tokenize read it, or where the reader
saw no error) and any unreadable table always fail the audit.
"""

from __future__ import annotations

import tarfile
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa

from audio_codecs import registry
from core.config import JsonConfig
from pipeline.io import StorageOptions, exists, filesystem, join, to_url
from pipeline.parquet_files import read_parquet
from pipeline.shard_reader import ShardRef, find_shards, iter_shard_samples
from pipeline.tokenize.parts import token_files
from schemas.rejects import check_rejects_schema
from schemas.tokens import check_tokens_schema_version


@dataclass(frozen=True)
class DamagedShard:
    """A shard that could not be read completely, and why."""

    shard: str
    reason: str
    rejected: bool  # Tokenize rejected the whole shard: the unreadable rest is accounted for.


@dataclass(frozen=True)
class DamagedTable:
    """A token or rejects table that could not be read, and why."""

    file: str
    reason: str


@dataclass
class AuditReport(JsonConfig):
    """The audit's findings; `ok` says whether the run accounts for every sample."""

    shard_samples: int
    token_rows: int
    rejected: int  # Shard samples not tokenized that the rejects table accounts for.
    missing: list[str]  # In the shards, neither tokenized nor rejected.
    duplicated: list[str]  # More than one token row.
    unexpected: list[str]  # Token rows with no shard sample.
    damaged_shards: list[DamagedShard] = field(default_factory=list)
    damaged_tables: list[DamagedTable] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing missing, duplicated, unexpected, or damaged beyond tokenize's rejects."""
        damaged = self.damaged_tables or any(not d.rejected for d in self.damaged_shards)
        return not (self.missing or self.duplicated or self.unexpected or damaged)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict, with `ok`."""
        return {**super().to_dict(), "ok": self.ok}


@dataclass(frozen=True)
class Rejects:
    """Tokenize's rejects: samples (`<shard>#<key>`) and whole shards (`<shard>`)."""

    keys: frozenset[str]  # Keys are unique across a prepare output, so the key alone decides.
    shards: frozenset[str]

    def covers(self, shard: str, key: str) -> bool:
        """Whether sample `key` of `shard` is rejected, alone or with its whole shard."""
        return key in self.keys or shard in self.shards


def read_shard_keys(shard: ShardRef, storage: StorageOptions) -> tuple[list[str], str]:
    """The keys of `shard` as tokenize reads them, and why it could not be read completely
    ("" when it could)."""
    keys: list[str] = []
    try:
        for key, _ in iter_shard_samples(shard.url, storage):
            keys.append(key)
    except (tarfile.TarError, OSError) as error:  # Storage errors too: report, not stop.
        return keys, f"{type(error).__name__}: {error} (after {len(keys)} samples)"
    # A tar cut between members reads as a complete, shorter archive; the manifest knows.
    if shard.samples is not None and len(keys) != shard.samples:
        return keys, f"{len(keys)} samples readable, prepare's manifest lists {shard.samples}"
    return keys, ""


def read_column(
    fs: fsspec.AbstractFileSystem,
    path: str,
    column: str,
    check_schema: Callable[[pa.Schema, str], None] | None = None,
) -> tuple[list[str], str]:
    """A table's `column`, and why the table could not be read ("" when it could).

    Args:
        fs: The filesystem holding the table.
        path: The table's path in `fs`.
        column: The column to read.
        check_schema: Called as `check_schema(schema, url)` on the schema read back; it
            raises to refuse the table (an unknown schema version).

    Raises:
        UnsupportedVersion: From `check_schema`: a table of a version this code does not
            read is refused, not reported as damaged.
    """
    try:
        table = read_parquet(fs, path, [column])
    except (pa.ArrowException, OSError) as error:  # Arrow reports a corrupt page as OSError.
        return [], f"{type(error).__name__}: {error}"
    if check_schema is not None:
        check_schema(table.schema, to_url(fs, path))
    return table.column(column).to_pylist(), ""


def token_keys(tokens_url: str, storage: StorageOptions) -> tuple[Counter, list[DamagedTable]]:
    """How often each key is in the token tables, and the tables that could not be read."""
    found: Counter = Counter()
    damaged: list[DamagedTable] = []
    for url in token_files(tokens_url, storage):
        keys, damage = read_column(*filesystem(url, storage), "key", check_tokens_schema_version)
        found.update(keys)
        if damage:
            damaged.append(DamagedTable(url, damage))
    return found, damaged


def read_rejects(
    tokens_url: str, storage: StorageOptions, shard_names: Collection[str]
) -> tuple[Rejects, list[DamagedTable]]:
    """Tokenize's rejects table (none yet: nothing rejected), and itself if unreadable.

    Raises:
        UnsupportedVersion: The rejects table has a schema version this code does not read.
    """
    fs, root = filesystem(tokens_url, storage)
    path = join(root, "rejects.parquet")
    exists_ = exists(fs, path)
    paths, damage = read_column(fs, path, "path", check_rejects_schema) if exists_ else ([], "")
    # A shard's name alone rejects the shard; `<shard>#<key>` one sample (keys hold no '#').
    keys = {p.rpartition("#")[2] for p in paths if p not in shard_names and "#" in p}
    rejects = Rejects(frozenset(keys), frozenset(p for p in paths if p in shard_names))
    return rejects, [DamagedTable(join(tokens_url, "rejects.parquet"), damage)] if damage else []


ShardKeys = list[tuple[ShardRef, list[str], str]]  # Each shard, its keys, why it is damaged.


def read_all_shard_keys(shards_url: str, storage: StorageOptions) -> ShardKeys:
    """Every shard of `shards_url` with its keys and damage (`read_shard_keys`).

    Raises:
        UnsupportedVersion: The manifest has a schema version this code does not read.
    """
    return [(s, *read_shard_keys(s, storage)) for s in find_shards(shards_url, storage)]


def audit_codec(
    shards_url: str, tokens_url: str, storage: StorageOptions, shards: ShardKeys | None = None
) -> AuditReport:
    """Compare prepare's shards with one codec's tables and rejects, sample by sample.

    Args:
        shards_url: Prepare's output.
        tokens_url: One codec's tokenize output (`<output>/<codec>`).
        storage: Storage options.
        shards: The shards' keys, when already read (`read_all_shard_keys`).

    Raises:
        UnsupportedVersion: The manifest, a token table or the rejects table has a schema
            version this code does not read.
    """
    if shards is None:
        shards = read_all_shard_keys(shards_url, storage)
    found, damaged_tables = token_keys(tokens_url, storage)
    rejects, unreadable = read_rejects(tokens_url, storage, {s.name for s, _, _ in shards})
    expected: Counter = Counter()
    rejected: set[str] = set()
    damaged_shards: list[DamagedShard] = []
    for shard, keys, damage in shards:
        expected.update(keys)
        rejected.update(k for k in keys if k not in found and rejects.covers(shard.name, k))
        if damage:
            damaged_shards.append(DamagedShard(shard.name, damage, shard.name in rejects.shards))
    return AuditReport(
        shard_samples=sum(expected.values()),
        token_rows=sum(found.values()),
        rejected=len(rejected),
        missing=sorted(set(expected) - set(found) - rejected),
        duplicated=sorted(k for k, n in found.items() if n > 1),
        unexpected=sorted(set(found) - set(expected)),
        damaged_shards=damaged_shards,
        damaged_tables=damaged_tables + unreadable,
    )


@dataclass
class RunAudit:
    """The audit of every codec table of a tokenize output; `ok` when each one is."""

    codecs: dict[str, AuditReport]

    @property
    def ok(self) -> bool:
        """At least one codec table, and every one accounts for every sample."""
        return bool(self.codecs) and all(r.ok for r in self.codecs.values())

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict: `ok`, and each codec's report."""
        return {"ok": self.ok, "codecs": {c: r.to_dict() for c, r in self.codecs.items()}}


def audit_run(
    shards_url: str, tokens_url: str, storage: StorageOptions, codecs: Collection[str] = ()
) -> RunAudit:
    """Audit every codec table of the tokenize output `tokens_url` (`<codec>/` folders).

    Args:
        shards_url: Prepare's output (read once for every codec).
        tokens_url: Tokenize's output.
        storage: Storage options.
        codecs: The codecs whose tables are looked for; default every registered codec.

    Raises:
        UnsupportedVersion: An artifact has a schema version this code does not read.
    """
    fs, root = filesystem(tokens_url, storage)
    names = [c for c in (codecs or registry.codecs(simulated=True)) if fs.isdir(join(root, c))]
    shards = read_all_shard_keys(shards_url, storage) if names else []
    return RunAudit(
        {name: audit_codec(shards_url, join(tokens_url, name), storage, shards) for name in names}
    )
