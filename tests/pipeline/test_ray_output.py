"""Ray's known-harmless lines are dropped from a job's stderr; everything else gets through,
and to stderr, not stdout, unless the job prints it as a result."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    r"""
    import os, sys
    from pipeline.ray_output import CONNECT_RETRY_LINES, StderrFilter

    noise = (b"[2026-11-29 00:47:38,908 E 7967 7967] core_worker.cc:2465: Actor with class "
             b"name: 'MapWorker(MapBatches(TokenizeBatch))' and ID: 'e699' has constructor "
             b"arguments in the object store and max_restarts > 0. If the arguments in the "
             b"object store go out of scope or are lost, the actor restart will fail.\n")
    stderr_filter = StderrFilter()
    stderr_filter.install()
    os.write(2, noise + b"a native line\n")
    os.write(2, b"\rtokenize:  50%")  # A progress bar's redraw: no newline.
    sys.stderr.write("\na Python line\n")
    sys.stderr.flush()
    with stderr_filter.holding(CONNECT_RETRY_LINES) as held:
        os.write(2, b"[2026-11-29 01:05:25,747 W 1 1] gcs_client.cc:210: Failed to get "
                    b"cluster ID from GCS server: Unauthenticated\n")
        stderr_filter.sync()
        print(len(held), "Unauthenticated" in held[0])
    os.write(2, b"[2026-11-29 01:05:26,000 W 1 1] gcs_client.cc:210: shown again\n")
    stderr_filter.remove()
    os.write(2, b"after removal\n")
    """
)


def test_stderr_filter_drops_only_known_harmless_lines_and_holds_connection_retries():
    completed = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == [b"1", b"True"]
    assert completed.stderr == (
        b"a native line\n\rtokenize:  50%\na Python line\n"
        b"[2026-11-29 01:05:26,000 W 1 1] gcs_client.cc:210: shown again\nafter removal\n"
    )


GUARD_SCRIPT = textwrap.dedent(
    r"""
    import os, sys
    from pipeline.ray_output import StderrFilter, StdoutGuard

    print("before", flush=True)
    guard, stderr_filter = StdoutGuard(), StderrFilter()
    guard.install()
    print("python print", flush=True)
    os.write(1, b"native write\n")
    stderr_filter.install()
    guard.install()  # fd 1 follows fd 2 into the filter.
    os.write(1, b"[2026-11-29 00:47:38,908 E 1 1] core_worker.cc:2465: Actor with class name: "
                b"'A' has constructor arguments in the object store and max_restarts > 0\n")
    print("the summary", file=guard.results, flush=True)
    print("buffered by Ray")  # Still in sys.stdout's buffer: it must not reach stdout.
    guard.remove()
    stderr_filter.remove()
    print("after", file=guard.results, flush=True)
    """
)


def test_stdout_guard_keeps_stdout_for_the_results_and_sends_the_rest_to_stderr():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    completed = subprocess.run(
        [sys.executable, "-c", GUARD_SCRIPT], capture_output=True, timeout=60, env=env
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == b"before\nthe summary\nafter\n"
    assert completed.stderr == b"python print\nnative write\nbuffered by Ray\n"
