"""Audit a run: every prepared segment is in the token tables exactly once, or rejected.

Reads the keys on both sides (shard tar headers only, no audio decoding; the tables' `key`
column only) and reports what is missing, duplicated or unexpected.
"""

from __future__ import annotations

import tarfile
from collections import Counter
from dataclasses import asdict, dataclass

from pipeline.io import StorageOptions, exists, filesystem, join, read_parquet
from pipeline.token_dataset import token_files
from pipeline.tokenize import find_shards


@dataclass
class AuditReport:
    shard_samples: int
    token_rows: int
    rejected: int
    missing: list[str]  # In the shards, neither tokenized nor rejected.
    duplicated: list[str]  # More than one token row.
    unexpected: list[str]  # Token rows with no shard sample.

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected)

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def shard_keys(shards_url: str, storage: StorageOptions) -> Counter:
    keys: Counter = Counter()
    for shard in find_shards(shards_url, storage):
        fs, path = filesystem(shard.url, storage)
        with fs.open(path, "rb") as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            keys.update({info.name.rsplit("/", 1)[-1].split(".", 1)[0] for info in tar})
    return keys


def audit_run(shards_url: str, tokens_url: str, storage: StorageOptions) -> AuditReport:
    expected = shard_keys(shards_url, storage)
    found: Counter = Counter()
    for url in token_files(tokens_url, storage):
        fs, path = filesystem(url, storage)
        found.update(read_parquet(fs, path, ["key"]).column("key").to_pylist())
    rejected = set()
    fs, root = filesystem(tokens_url, storage)
    rejects_path = join(root, "rejects.parquet")
    if exists(fs, rejects_path):
        paths = read_parquet(fs, rejects_path, ["path"]).column("path").to_pylist()
        rejected = {p.split("#", 1)[1] for p in paths if "#" in p}
    return AuditReport(
        shard_samples=sum(expected.values()),
        token_rows=sum(found.values()),
        rejected=len(rejected),
        missing=sorted(set(expected) - set(found) - rejected),
        duplicated=sorted(k for k, n in found.items() if n > 1),
        unexpected=sorted(set(found) - set(expected)),
    )
