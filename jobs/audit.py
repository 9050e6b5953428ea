"""Audit a run: every prepared segment is tokenized exactly once, or in the rejects table.

Example:
    python -m jobs.audit --shards ./run/prepared --tokens ./run/tokens

Exits 0 when nothing is missing, duplicated or unexpected, else 1, and prints the report.
"""

from __future__ import annotations

import argparse
import json

from jobs.cli import add_storage_arguments, storage_from_args
from pipeline.audit import audit_run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shards", required=True, help="prepare output URL")
    parser.add_argument("--tokens", required=True, help="tokenize output URL")
    add_storage_arguments(parser)
    args = parser.parse_args(argv)  # fmt: skip
    report = audit_run(args.shards, args.tokens, storage_from_args(args))
    print(json.dumps(report.to_json(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
