"""Command-line pieces every job shares: storage options and where Ray runs."""

from __future__ import annotations

import argparse
import logging

from pipeline.claims import OutputInUse
from pipeline.execution import start_ray
from pipeline.io import StorageOptions

# What a job reports as "error: ..." with exit status 2 instead of a traceback: the user's
# inputs or settings are wrong, not the code.
USAGE_ERRORS = (OutputInUse, FileNotFoundError, ValueError)


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--s3-endpoint-url", help="S3 API endpoint for non-AWS servers")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra fsspec option (repeatable)")  # fmt: skip


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    parser.add_argument("--num-cpus", type=int, help="CPUs for the local Ray (default: all)")


def storage_from_args(args: argparse.Namespace) -> StorageOptions:
    extra = {}
    for item in args.storage_option:
        key, _, value = item.partition("=")
        extra[key] = value
    return StorageOptions(endpoint_url=args.s3_endpoint_url, extra=extra)


def start_job(args: argparse.Namespace) -> None:
    """Log to stderr and start (or join) Ray as `--address` / `--num-cpus` say."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start_ray(args.address, args.num_cpus)
