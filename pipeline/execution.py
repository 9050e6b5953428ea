"""Where a job's Ray runs: a private local Ray, or a cluster named by address.

The policy, which `--help` and the README repeat:
- no `--address` and no RAY_ADDRESS: a private local Ray for this job alone. Never a cluster
  that a `ray start` left recorded in Ray's temp dir: that head may be dead (Ray would retry
  it for minutes) or belong to someone else.
- `--address auto | HOST:PORT | ray://HOST:PORT` (or RAY_ADDRESS): join that cluster. One that
  cannot be reached fails within about 30 s with a `ClusterUnreachable` naming the address.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from core.errors import EnvironmentFault
from pipeline.ray_output import (
    CONNECT_RETRY_LINES,
    StderrFilter,
    StdoutGuard,
    quiet_ray_logs,
    quiet_ray_progress,
    show_forwarded_output,
)

# How long a named cluster gets to answer: the TCP probe, then Ray's own connection.
PROBE_SECONDS = 10.0
CONNECT_SECONDS = 45.0


_stderr_filter = StderrFilter()
_stdout_guard = StdoutGuard()
_connected_here = False  # Whether start_ray made this process's Ray connection.


class JobInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; raised in the main thread wherever the job is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ClusterUnreachable(EnvironmentFault, ConnectionError):
    """The Ray cluster the job was told to join cannot be reached or refused us."""


@dataclass(frozen=True)
class RayTarget:
    """The cluster to join (`address`, as Ray takes it) and where its head listens."""

    address: str
    host: str
    port: int
    source: str  # "--address" or "RAY_ADDRESS": what the error message names.
    given: str  # As the user wrote it ("auto", "localhost:6379"), for messages.

    def describe(self) -> str:
        """Where the address came from and what it resolved to, for messages."""
        named = f"{self.source}={self.given}"
        return named if self.given == self.address else f"{named}, {self.address}"


def resolve_target(address: str | None) -> RayTarget | None:
    """The cluster `address` (else RAY_ADDRESS) names; None means a private local Ray."""
    source = "--address"
    if not address:
        address, source = os.environ.get("RAY_ADDRESS") or None, "RAY_ADDRESS"
    if address is None or address == "local":
        return None
    if address.startswith("ray://"):
        host, port = _split_host_port(address[len("ray://") :], source)
        return RayTarget(address, host, port, source, address)
    from ray._private.services import canonicalize_bootstrap_address

    try:
        # "auto" reads the head that this machine's last `ray start` recorded.
        canonical = canonicalize_bootstrap_address(address)
    except (ConnectionError, ValueError) as error:
        raise ClusterUnreachable(f"{source}={address}: {error}") from None
    if canonical is None:
        raise ClusterUnreachable(f"{source}={address}: no running Ray cluster found")
    host, port = _split_host_port(canonical, source)
    return RayTarget(canonical, host, port, source, address)


def _split_host_port(address: str, source: str) -> tuple[str, int]:
    host, _, port = address.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterUnreachable(f"{source}={address}: not of the form HOST:PORT")
    return host, int(port)


def probe(target: RayTarget, seconds: float = PROBE_SECONDS) -> None:
    """Fail fast when nothing listens at the head's address (Ray itself retries for minutes)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((target.host, target.port), timeout=5):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ClusterUnreachable(
                    f"cannot reach the Ray cluster ({target.describe()}): "
                    f"{error.strerror or error}; start it with `ray start --head`, or run "
                    "without --address and RAY_ADDRESS for a private local Ray"
                ) from None
            time.sleep(1)


def start_ray(address: str | None = None, num_cpus: int | None = None,
              verbose: bool = False) -> None:  # fmt: skip
    """Join the cluster `address` names, or start this job's private local Ray."""
    import ray

    if ray.is_initialized():
        return
    target = resolve_target(address)
    if target is not None:
        probe(target)
    log_level = logging.INFO if verbose else logging.WARNING
    quiet_ray_logs(verbose)
    show_forwarded_output(verbose)
    _stdout_guard.install()  # Before ray.init: the Ray processes it starts inherit fd 1.
    # ray.init replaces the SIGTERM handler with a bare sys.exit; the job keeps its own.
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if target is None:
            # address="local" never reads the temp dir's record of an earlier `ray start`.
            # The filter comes after: the Ray processes started here must not inherit it.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     logging_level=log_level, log_to_driver=verbose)  # fmt: skip
            if not verbose:
                _filter_stderr()
        else:
            _join(target, log_level, verbose)
    except SystemExit as exit_:
        # Ray's own SIGTERM handler, active while it starts, exits with the signal's number.
        if exit_.code in (signal.SIGINT, signal.SIGTERM):
            raise JobInterrupted(int(exit_.code)) from None
        raise
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    global _connected_here
    _connected_here = True
    quiet_ray_progress(verbose)  # Ray Data's context exists only now.


def job_stdout() -> TextIO:
    """Where a job prints what scripts read (its summary table, its JSON): its stdout.

    Between start_ray and stop_ray the process's fd 1 goes to stderr, so that nothing Ray
    prints can reach the job's stdout; this stream still does.
    """
    return _stdout_guard.results


def _filter_stderr() -> None:
    """Drop Ray's harmless native lines from fd 2, and from fd 1, which follows it."""
    _stderr_filter.install()
    _stdout_guard.install()


def set_stall_timeout(seconds: float) -> None:
    """After start_ray: Ray Data ends a dataset's execution that makes no progress this long."""
    import ray.data

    ray.data.DataContext.get_current().execution_no_progress_timeout_s = seconds


def _join(target: RayTarget, log_level: int, verbose: bool) -> None:
    """Connect to a running cluster; its refusals become one `ClusterUnreachable`."""
    import ray

    if not verbose:
        _filter_stderr()
    with _deadline(CONNECT_SECONDS, target), _stderr_filter.holding(CONNECT_RETRY_LINES) as held:
        try:
            ray.init(address=target.address, logging_level=log_level, log_to_driver=verbose)
        except Exception as error:  # Ray raises several kinds here (auth, GCS, timeouts).
            _stderr_filter.sync()
            raise ClusterUnreachable(_describe_refusal(target, error, held)) from None


def stop_ray() -> None:
    """Undo start_ray: disconnect (a private local Ray stops with it), restore stdout and stderr.

    A Ray that the caller had started before (a notebook, a test session) is left running.
    """
    global _connected_here
    import ray

    if _connected_here and ray.is_initialized():
        ray.shutdown()
    _connected_here = False
    show_forwarded_output(True)  # Ray's default, for a Ray started later in this process.
    _stdout_guard.remove()  # Before the filter: fd 1 may hold the filter's pipe.
    _stderr_filter.remove()


def _describe_refusal(target: RayTarget, error: Exception, held: list[str]) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    said = " ".join([type(error).__name__, str(error), *held]).lower()
    if "unauthenticated" in said or "authentication" in said or "auth_token" in said:
        return (
            f"the Ray cluster ({target.describe()}) refused us: it uses token "
            "authentication; set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or "
            "RAY_AUTH_TOKEN_PATH) as on the head (docs/cluster.md)"
        )
    return f"cannot join the Ray cluster ({target.describe()}): {text}"


class _deadline:
    """Ray's connect retries in C++ where signals wait; past `seconds`, exit with one line."""

    def __init__(self, seconds: float, target: RayTarget) -> None:
        self._done = threading.Event()
        self._seconds = seconds
        self._target = target

    def __enter__(self) -> None:
        threading.Thread(target=self._watch, name="ray-connect-deadline", daemon=True).start()

    def __exit__(self, *exc) -> None:
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(self._seconds):
            return
        print(
            f"error: the Ray cluster ({self._target.describe()}) did not answer within "
            f"{self._seconds:.0f} s; check that its head is running",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)
