"""Command-line pieces every job shares: the parser, storage and Ray options, and `run_job`.

Every job follows one contract:
- a usage error (bad flag value, unknown preset, missing input) is one `error:` line on
  stderr and exit status 2, reported before Ray starts where it can be (a stage that finds
  one, say an unreadable manifest, raises one of USAGE_ERRORS); any other error, a
  ValueError included, is a bug and keeps its traceback;
- an environment failure (storage, network, an unreachable cluster) is one `error:` line and
  status 1, and rerunning the same command resumes (docs/reliability.md);
- SIGINT / SIGTERM stop the job promptly with status 130 / 143; what finished is kept and
  rerunning the same command resumes;
- the status returned is the status the process exits with, every time.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from core.key_map import CheckpointError
from pipeline.claims import OutputInUse
from pipeline.errors import (
    InvalidManifest,
    InvalidSetting,
    describe,
    is_environment_failure,
    retry_delay_scale,
)
from pipeline.execution import (
    ClusterUnreachable,
    JobInterrupted,
    set_stall_timeout,
    start_ray,
    stop_ray,
)
from pipeline.io import StorageOptions, exists, filesystem
from schemas.version import UnsupportedVersion


class UsageError(ValueError):
    """The command line asks for something that cannot be done; checked before Ray starts."""


# What a job reports as "error: ..." with exit status 2 instead of a traceback: the user's
# inputs or settings are wrong, not the code. Only these dedicated classes: a plain
# ValueError is a bug, and its traceback is what a report needs.
#   UsageError          a command-line check in jobs/ (before Ray starts)
#   InvalidSetting      a pipeline config value the user chose cannot work
#   InvalidManifest     the catalog manifest the user gave cannot be read
#   CheckpointError     the file given as a checkpoint is not one, or not of this model
#   OutputInUse         the output holds another run (use a new --output, or --force)
#   UnsupportedVersion  an input was written by another version of this tool
#   FileNotFoundError   an input the user named does not exist (or holds no shards/tables)
USAGE_ERRORS = (
    UsageError,
    InvalidSetting,
    InvalidManifest,
    CheckpointError,
    OutputInUse,
    UnsupportedVersion,
    FileNotFoundError,
)
# Of those, what `run_job` itself turns into status 2 (raised outside a stage, by the
# checks before Ray starts); a stray OSError there stays a traceback or an environment error.
_CHECK_ERRORS = (UsageError, InvalidSetting, InvalidManifest, UnsupportedVersion)


class JobParser(argparse.ArgumentParser):
    """argparse whose errors are one `error:` line (exit 2) rather than usage + message."""

    def __init__(self, prog: str, description: str | None) -> None:
        super().__init__(
            prog=prog, description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip

    def error(self, message: str) -> None:  # type: ignore[override]
        """Prints `message` as one `error:` line and exits with status 2."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1.

    Raises:
        argparse.ArgumentTypeError: if `text` is below 1 (argparse reports it as a usage error).
    """
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer of 0 or more.

    Raises:
        argparse.ArgumentTypeError: if `text` is negative.
    """
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0.

    Raises:
        argparse.ArgumentTypeError: if `text` is 0 or less (or NaN).
    """
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a number of 0 or more.

    Raises:
        argparse.ArgumentTypeError: if `text` is negative (or NaN).
    """
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a fraction in (0, 1].

    Raises:
        argparse.ArgumentTypeError: if `text` is outside (0, 1].
    """
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {text}")
    return value


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --s3-endpoint-url and --storage-option, which `storage_from_args` reads."""
    parser.add_argument("--s3-endpoint-url", help="S3 API endpoint for non-AWS servers")
    parser.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra fsspec option (repeatable)")  # fmt: skip


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds --address, --num-cpus, --stall-minutes and --verbose, which `start_job` reads."""
    parser.add_argument(
        "--address",
        help="Ray cluster to join: auto (the head this machine's `ray start` runs), HOST:PORT "
        "or ray://HOST:PORT. Default: RAY_ADDRESS when set, else a private local Ray for "
        "this job alone (never a cluster left recorded by an earlier `ray start`)",
    )
    parser.add_argument(
        "--num-cpus", type=positive_int, help="CPUs for the private local Ray (default: all)"
    )
    parser.add_argument(
        "--stall-minutes", type=positive_float, metavar="MINUTES",
        help="end a stage whose work has made no progress for this long (say, a lost node's "
        "work no longer fits the cluster); what it did not finish stays for a rerun "
        "(default: Ray Data's, 30 unless RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S says)",
    )  # fmt: skip
    parser.add_argument(
        "--verbose", action="store_true", help="also show Ray's own progress bars and logs"
    )


def storage_from_args(args: argparse.Namespace) -> StorageOptions:
    """The StorageOptions the storage arguments ask for.

    Raises:
        UsageError: if a --storage-option is not KEY=VALUE.
    """
    extra = {}
    for item in args.storage_option:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise UsageError(f"--storage-option {item!r} is not KEY=VALUE")
        extra[key] = value
    return StorageOptions(endpoint_url=args.s3_endpoint_url, extra=extra)


def require_input(url: str, option: str, storage: StorageOptions) -> None:
    """A usage error when the input named by `option` does not exist (checked before Ray)."""
    fs, path = filesystem(url, storage)
    if not exists(fs, path):
        raise UsageError(f"{option} {url}: no such file or directory")


def start_job(args: argparse.Namespace) -> None:
    """Log to stderr and start (or join) Ray as `--address` / `--num-cpus` say."""
    if args.num_cpus and (args.address or os.environ.get("RAY_ADDRESS")):
        raise UsageError("--num-cpus sizes a private local Ray; a cluster has its own CPUs")
    retry_delay_scale()  # A bad MUCODEC_RETRY_DELAY_SCALE is a usage error, not a failed retry.
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    start_ray(args.address, args.num_cpus, args.verbose)
    if args.stall_minutes:
        set_stall_timeout(args.stall_minutes * 60)


def run_job(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a job's `main` under the contract above and return its exit status."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupt(signum: int, frame) -> None:
        raise JobInterrupted(signum)

    for signum in previous:
        signal.signal(signum, interrupt)
    try:
        return main(argv)
    except _CHECK_ERRORS as error:
        return _fail(str(error), 2)
    except ClusterUnreachable as error:
        return _fail(str(error), 1)
    except Exception as error:
        if not is_environment_failure(error):
            raise  # A bug: its traceback is what a report needs.
        return _fail(
            f"{describe(error)}; what finished is kept: rerun the same command to resume", 1
        )
    except JobInterrupted as interruption:
        for signum in previous:  # A second signal while stopping must not cut the stop short.
            signal.signal(signum, signal.SIG_IGN)
        return _fail(
            f"interrupted by {interruption}; finished work is kept: rerun the same command "
            "to resume",
            128 + interruption.signum,
        )
    finally:
        stop_ray()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main_entry(main: Callable[[list[str] | None], int]) -> NoReturn:
    """A job's `__main__`: run it, then exit with its status whatever signal comes late.

    Once the job has finished, a SIGTERM during interpreter shutdown would kill the process
    by the signal and hide the status the job ended with.
    """
    status = run_job(main)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(status)


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return status
