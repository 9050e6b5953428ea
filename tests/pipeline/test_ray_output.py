"""Ray's known-harmless lines are dropped from a job's stderr; everything else gets through."""

from __future__ import annotations

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
