"""Audit a run: in every codec's table, each prepared segment is once, or rejected.

Example:
    python -m jobs.audit --shards ./run/prepared --tokens ./run/tokens

Every codec table under --tokens (`<tokens>/<codec>/`) is audited. Exits 0 when, for each,
nothing is missing, duplicated, unexpected or damaged beyond what its rejects table accounts
for, else 1 (also when there is no codec table), and prints the report per codec (damaged
shards and tables are listed).
"""

from __future__ import annotations

import json

from jobs.cli import (
    JobParser,
    add_storage_arguments,
    main_entry,
    require_input,
    storage_from_args,
)
from pipeline.audit import audit_run


def build_parser() -> JobParser:
    """The job's argument parser."""
    parser = JobParser("python -m jobs.audit", __doc__)
    parser.add_argument("--shards", required=True, help="prepare output URL")
    parser.add_argument("--tokens", required=True, help="tokenize output URL")
    parser.add_argument(
        "--codec", help="comma-separated codecs to audit (default: every codec table found)"
    )
    add_storage_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the audit, print its report as JSON; exit status 0 when it is ok, else 1."""
    args = build_parser().parse_args(argv)
    storage = storage_from_args(args)
    require_input(args.shards, "--shards", storage)
    require_input(args.tokens, "--tokens", storage)
    codecs = [c.strip() for c in (args.codec or "").split(",") if c.strip()]
    report = audit_run(args.shards, args.tokens, storage, codecs)
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    main_entry(main)
