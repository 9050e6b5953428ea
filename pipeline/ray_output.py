"""What Ray prints: only what a person running a job needs, unless `--verbose`.

Each stage draws one progress bar of its own; Ray Data's per-operator bars (and the status
block it logs every few seconds when stdout is not a terminal) would interleave with it.
Some Ray lines are known to be harmless and would print on every run; they are dropped.
Nothing of Ray's reaches the job's stdout, which scripts parse: see `StdoutGuard`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from typing import TextIO

# Lines written straight to the stderr file descriptor by Ray's C++ core, not through Python
# logging. Ray Data's actor pools pass their function through the object store, and every
# actor start logs this at error level (ray-project/ray#53727); it asks nothing of the user.
HARMLESS_NATIVE_LINES = (
    re.compile(
        r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in "
        r"the object store and max_restarts > 0"
    ),
)

# What Ray's C++ client prints while it retries a cluster that refuses it; the job holds them
# back and words one error line from them instead.
CONNECT_RETRY_LINES = (re.compile(r"gcs_client\.cc:\d+: |Failed to connect to GCS"),)

# Python loggers whose records are dropped below the given level unless `--verbose`.
RAY_LOGGER_LEVELS = {
    # "Token authentication is enabled for this Ray cluster": our private local Ray is
    # meant to have it.
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
    # "Progress bars disabled": we turned them off on purpose.
    "ray.data._internal.progress": logging.ERROR,
    # "Dataset ... execution finished in N seconds": the stage's own summary says it.
    "ray.data._internal.execution.streaming_executor": logging.WARNING,
    # "Operator ... uses 2.3GiB of memory per worker ... consider setting memory=", every
    # 30 s: a codec actor holds its model by design; Ray's own OOM handling still applies.
    "ray.data._internal.issue_detection.issue_detector_manager": logging.ERROR,
}


def quiet_ray_logs(verbose: bool) -> None:
    """Before `ray.init`: drop Ray's known-harmless Python log records unless verbose."""
    for name, level in RAY_LOGGER_LEVELS.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else level)


def quiet_ray_progress(verbose: bool) -> None:
    """After `ray.init`: Ray Data's own progress bars and plan printing only when verbose."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose


def show_forwarded_output(shown: bool) -> None:
    """Whether this driver prints what Ray forwards to it from the cluster.

    That is the workers' stdout and stderr (which `ray.init(log_to_driver=False)` stops at
    the source), and the errors Ray pushes to every driver: a worker died, a node was lost, a
    task will be retried. Those come whatever `log_to_driver` says, and print through the
    same function, which this flag (Ray's own, for its debugger) turns off. Both stay in the
    session's logs (worker-*.out/err, gcs_server.out, python-core-driver-*.log).
    """
    import ray._private.worker

    ray._private.worker._worker_logs_enabled = shown


class StdoutGuard:
    """Keeps the job's stdout for what scripts read; anything else written to it goes to stderr.

    Ray prints to `sys.stdout` from threads of its own (see `show_forwarded_output`), at
    any time, and native code or a Ray process started here may write to fd 1. So fd 1
    itself goes to stderr, for every holder of `sys.stdout` alike, and only `results`
    writes to a copy of the job's stdout.
    """

    def __init__(self) -> None:
        self._results: TextIO | None = None

    @property
    def results(self) -> TextIO:
        """The job's stdout: for its summary table or JSON, and nothing else."""
        return self._results or sys.stdout

    def install(self) -> None:
        """Points fd 1 at fd 2 as it is now; the first call keeps the job's stdout first.

        Call it again after fd 2 changes (`StderrFilter.install`) for fd 1 to follow.
        """
        sys.stdout.flush()  # Buffered text goes where fd 1 pointed when it was printed.
        if self._results is None:
            # os.dup's copy is not inherited: no Ray process holds the job's stdout open.
            self._results = os.fdopen(os.dup(1), "w", buffering=1, encoding=sys.stdout.encoding,
                                      errors=sys.stdout.errors)  # fmt: skip
        os.dup2(2, 1)

    def remove(self) -> None:
        """Gives fd 1 back to the job's stdout; a second call does nothing."""
        if self._results is None:
            return
        sys.stdout.flush()  # What Ray printed so far still goes to stderr.
        self._results.flush()
        os.dup2(self._results.fileno(), 1)
        self._results.close()
        self._results = None


class StderrFilter:
    """Drops `HARMLESS_NATIVE_LINES` from this process's stderr file descriptor.

    Native code writes to fd 2 directly, so the filter sits on the descriptor: fd 2 becomes
    a pipe whose reader forwards every other line (and every partial line, such as a
    progress bar's carriage-return update) to the original stderr at once.
    """

    _STOP = b"\x00stderr-filter-stop\x00\n"
    _SYNC = b"\x00stderr-filter-sync\x00\n"

    def __init__(self) -> None:
        self._original: int | None = None
        self._pipe_writer: int | None = None
        self._thread: threading.Thread | None = None
        self._held_patterns: tuple[re.Pattern, ...] = ()
        self._held: list[str] = []
        self._synced = threading.Event()

    @contextlib.contextmanager
    def holding(self, patterns: tuple[re.Pattern, ...]) -> Iterator[list[str]]:
        """Also drop lines matching `patterns` for a while; yields the lines dropped so far."""
        self._held_patterns, self._held = patterns, []
        try:
            yield self._held
        finally:
            self._held_patterns = ()

    def sync(self, timeout: float = 2.0) -> None:
        """Wait until every line written so far has been forwarded or dropped."""
        if self._pipe_writer is None:
            return
        self._synced.clear()
        os.write(self._pipe_writer, self._SYNC)
        self._synced.wait(timeout)

    def install(self) -> None:
        """Routes this process's fd 2 through the filter; a second call does nothing.

        Everything written to stderr from now on, by Python or native code, goes through a
        pipe that a daemon thread forwards to the original stderr, less the dropped lines.
        """
        if self._original is not None:
            return
        sys.stderr.flush()
        reader, writer = os.pipe()
        self._original = os.dup(2)
        self._pipe_writer = writer
        os.dup2(writer, 2)
        self._thread = threading.Thread(
            target=self._forward, args=(reader, self._original), name="stderr-filter",
            daemon=True,
        )  # fmt: skip
        self._thread.start()

    def remove(self) -> None:
        """Restore the original stderr once every line written so far is forwarded."""
        if self._original is None or self._pipe_writer is None or self._thread is None:
            return
        sys.stderr.flush()
        os.dup2(self._original, 2)
        os.write(self._pipe_writer, self._STOP)
        self._thread.join(timeout=5)
        os.close(self._pipe_writer)
        os.close(self._original)
        self._original = self._pipe_writer = self._thread = None

    def _forward(self, reader: int, original: int) -> None:
        pending = b""
        with os.fdopen(reader, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                pending += chunk
                stop, synced = self._STOP in pending, self._SYNC in pending
                pending = pending.replace(self._STOP, b"").replace(self._SYNC, b"")
                lines = pending.split(b"\n")
                pending = lines.pop()
                kept = [line + b"\n" for line in lines if not self._drop(line)]
                if pending and not pending.startswith(b"["):
                    kept.append(pending)  # A partial line (progress bar): show it now.
                    pending = b""
                if kept:
                    os.write(original, b"".join(kept))
                if synced:
                    self._synced.set()
                if stop:
                    if pending:
                        os.write(original, pending)
                    return

    def _drop(self, line: bytes) -> bool:
        text = line.decode(errors="replace")
        if any(pattern.search(text) for pattern in self._held_patterns):
            self._held.append(text)
            return True
        return any(pattern.search(text) for pattern in HARMLESS_NATIVE_LINES)
