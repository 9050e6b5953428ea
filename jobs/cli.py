"""Command-line pieces every job shares: the parser, storage and Ray options, and `run_job`.

Every job follows one contract:
- a usage error (bad flag value, unknown preset, missing input, an output in use, a file
  that is not a checkpoint) is one `error:` line on stderr and exit status 2, reported
  before Ray starts where it can be; the kinds are those of `core.errors`, and any other
  error, a ValueError included, is a bug and keeps its traceback;
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
import time
from collections.abc import Callable
from typing import NoReturn

from core.errors import CheckpointError, UsageError
from pipeline.errors import describe, is_environment_failure, retry_delay_scale
from pipeline.execution import (
    ClusterUnreachable,
    JobInterrupted,
    set_stall_timeout,
    start_ray,
    stop_ray,
)
from pipeline.io import StorageOptions, exists, filesystem


def exit_status(error: BaseException) -> int | None:
    """The status a job ends with for `error`, by its kind (core.errors); None for a bug.

    What the user asked for cannot be done (`UsageError`: a setting, an input or an output
    they named), or a file they gave as a checkpoint is not one: 2. The environment failed:
    1, and a rerun resumes. Anything else is a bug, and its traceback is what a report needs.
    """
    if isinstance(error, UsageError | CheckpointError):
        return 2
    if is_environment_failure(error):
        return 1
    return None


# Old flag -> its new name: still read, with a warning, for one release (until 0.3).
DEPRECATED_FLAGS = {"--dtype": "--precision", "--decoder-dtype": "--decoder-precision"}


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

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        """argparse's, with each deprecated flag (`DEPRECATED_FLAGS`) read as its new name
        after one line on stderr that says so."""
        args = list(sys.argv[1:] if args is None else args)
        for index, arg in enumerate(args):
            flag, equals, value = arg.partition("=")
            new = DEPRECATED_FLAGS.get(flag)
            if new in self._option_string_actions:
                print(f"warning: {flag} is deprecated; use {new}", file=sys.stderr)
                args[index] = f"{new}{equals}{value}"
        return super().parse_known_args(args, namespace)


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


def start_job(args: argparse.Namespace) -> float:
    """Log to stderr and start (or join) Ray as `--address` / `--num-cpus` say.

    Returns:
        The seconds Ray took to start or join (a fixed cost the summaries show).
    """
    if args.num_cpus and (args.address or os.environ.get("RAY_ADDRESS")):
        raise UsageError("--num-cpus sizes a private local Ray; a cluster has its own CPUs")
    retry_delay_scale()  # A bad MUCODEC_RETRY_DELAY_SCALE is a usage error, not a failed retry.
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    start_ray(args.address, args.num_cpus, args.verbose)
    if args.stall_minutes:
        set_stall_timeout(args.stall_minutes * 60)
    return time.perf_counter() - started


def run_job(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a job's `main` under the contract above and return its exit status."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupt(signum: int, frame) -> None:
        raise JobInterrupted(signum)

    for signum in previous:
        signal.signal(signum, interrupt)
    try:
        return main(argv)
    except Exception as error:
        status = exit_status(error)
        if status is None:
            raise  # A bug: its traceback is what a report needs.
        if status == 2 or isinstance(error, ClusterUnreachable):
            return _fail(str(error), status)
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
