"""A job submitted to a real Ray cluster, the way docs/cluster.md tells users to run one.

The test starts its own head with `ray start --head --block` in a subprocess (token
authentication on, its own temp dir and ports), submits `python -m jobs.prepare` through
Ray's job-submission API with the repository as the job's working_dir, and checks the
output. It never calls `ray.init` and never runs `ray stop` (which kills every Ray process
on the machine, including a Ray the pytest process or another test run has started): it
stops only the processes its own head started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import jobs
from testing.synth import synth_song, write_audio

# The job's working_dir: the checkout that holds the `jobs` package under test.
REPO_ROOT = Path(jobs.__file__).resolve().parent.parent
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]  # The `ray` command of this Python.

HEAD_START_SECONDS = 90  # `ray start --head` with the dashboard: ~5 s on an idle 2-core machine.
JOB_SECONDS = 180  # The job itself: ~20 s, working_dir upload and runtime env included.
HEAD_STOP_SECONDS = 30

SONGS = 2
SONG_SECONDS = 1.5
SEGMENT_SECONDS = 1.0
MIN_TAIL_SECONDS = 0.5
# Each song: one full 1 s segment plus its 0.5 s tail (kept: not shorter than the minimum).
SEGMENTS_PER_SONG = 2


@dataclass
class Head:
    """A running head: its dashboard (job-submission) URL and the token it requires."""

    dashboard_url: str
    token: str
    temp_dir: str
    process: subprocess.Popen

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (held together so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The command name in parentheses may itself hold spaces and parentheses.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z":
            continue  # A zombie is already dead; its parent reaps it.
        table[int(entry)] = (int(fields[1]), cmdline)
    return table


def _our_processes(root_pid: int, temp_dir: str) -> set[int]:
    """The head's descendants, and any process whose command line names its temp dir."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = set(), [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    names_it = re.compile(re.escape(temp_dir) + r"(?=[/\s]|$)")
    found |= {pid for pid, (_, cmdline) in table.items() if names_it.search(cmdline)}
    found.discard(os.getpid())
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _head_log(temp_dir: str) -> str:
    path = Path(temp_dir, "head.log")
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no head log)"


@contextlib.contextmanager
def ray_head(num_cpus: int = 2) -> Iterator[Head]:
    """A Ray head with the dashboard and token authentication, torn down on exit."""
    import requests

    # Short: Ray's unix socket paths live under it and must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    token = secrets.token_hex(32)  # What `ray get-auth-token --generate` writes.
    gcs, dashboard, client, agent_http, agent_grpc, metrics, runtime_env = _free_ports(7)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        # SIGTERM tears the node down at once instead of draining it for up to 30 s.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        # Scratch files of the head's processes and of the job land in the temp dir too,
        # which goes when the test ends.
        TMPDIR=temp_dir,
    )
    command = [
        *RAY_CLI, "start", "--head", "--block",
        "--temp-dir", temp_dir, "--port", str(gcs), "--num-cpus", str(num_cpus),
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dashboard), "--ray-client-server-port", str(client),
        "--dashboard-agent-listen-port", str(agent_http),
        "--dashboard-agent-grpc-port", str(agent_grpc),
        "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env),
        "--disable-usage-stats",
    ]  # fmt: skip
    log = open(Path(temp_dir, "head.log"), "w")  # noqa: SIM115 (closed in the finally)
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, cwd=temp_dir,
    )  # fmt: skip
    head = Head(f"http://127.0.0.1:{dashboard}", token, temp_dir, process)
    try:
        deadline = time.monotonic() + HEAD_START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"ray start --head exited with {process.returncode}:\n"
                            f"{_head_log(temp_dir)}")  # fmt: skip
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(
                    f"{head.dashboard_url}/api/version", headers=head.auth_headers, timeout=5
                )
                if answer.status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the head's dashboard did not answer within {HEAD_START_SECONDS} "
                            f"s:\n{_head_log(temp_dir)}")  # fmt: skip
            time.sleep(0.5)
        yield head
    finally:
        started = _our_processes(process.pid, temp_dir)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # The head stops every process it started.
            try:
                process.wait(HEAD_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Whatever outlived the head (a job driver runs in its own session) goes too.
        _kill(started | _our_processes(process.pid, temp_dir))
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_job(client, job_id: str, seconds: float):
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + seconds
    while True:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        if time.monotonic() > deadline:
            with contextlib.suppress(Exception):
                client.stop_job(job_id)
            pytest.fail(f"job {job_id} still {status} after {seconds} s; its logs:\n"
                        f"{client.get_job_logs(job_id)}")  # fmt: skip
        time.sleep(1)


@pytest.mark.integration
@pytest.mark.timeout(HEAD_START_SECONDS + JOB_SECONDS + HEAD_STOP_SECONDS + 60)
def test_prepare_submitted_to_a_token_authenticated_cluster(tmp_path):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus, JobSubmissionClient

    corpus = tmp_path / "corpus"
    for seed in range(SONGS):
        audio = synth_song(SONG_SECONDS, 48_000, 2, seed)
        write_audio(str(corpus / f"song{seed}.flac"), audio, 48_000, "PCM_16")
    output = tmp_path / "out"

    assert (REPO_ROOT / "pyproject.toml").is_file(), REPO_ROOT  # Never upload anything else.
    with ray_head() as head:
        # The cluster really requires the token: a client without it is turned away.
        bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        refused = subprocess.run(
            [*RAY_CLI, "job", "list", "--address", head.dashboard_url],
            env={**bare, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "Unauthorized: Missing authentication token" in refused.stderr, refused.stderr
        with pytest.raises(AuthenticationError, match="Invalid authentication token"):
            JobSubmissionClient(head.dashboard_url, headers={"Authorization": "Bearer wrong"})

        # The HTTP client of `ray job submit`; the header carries what RAY_AUTH_TOKEN would.
        client = JobSubmissionClient(head.dashboard_url, headers=head.auth_headers)
        entrypoint = shlex.join([
            sys.executable, "-m", "jobs.prepare", "--input", str(corpus),
            "--output", str(output), "--segment-seconds", str(SEGMENT_SECONDS),
            "--min-tail-seconds", str(MIN_TAIL_SECONDS), "--songs-per-unit", "1",
        ])  # fmt: skip
        job_id = client.submit_job(
            entrypoint=entrypoint, runtime_env={"working_dir": str(REPO_ROOT)}
        )
        status = _wait_for_job(client, job_id, JOB_SECONDS)
        logs = client.get_job_logs(job_id)
        assert status == JobStatus.SUCCEEDED, f"job {job_id} {status}; its logs:\n{logs}"
        # The driver joined this cluster (RAY_ADDRESS from the job supervisor) rather than
        # starting a private Ray: the cluster knows it as the job's driver.
        info = client.get_job_info(job_id)
        assert info.driver_info is not None, f"no driver joined the cluster; logs:\n{logs}"
        assert info.driver_exit_code == 0, logs

    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] is True
    # One unit per song (--songs-per-unit 1), each unit writes one shard.
    assert len(manifest["shards"]) == SONGS
    assert [s["samples"] for s in manifest["shards"]] == [SEGMENTS_PER_SONG] * SONGS
    assert manifest["samples"] == SONGS * SEGMENTS_PER_SONG
    for shard in manifest["shards"]:
        assert (output / "shards" / shard["name"]).is_file()
    summary = json.loads((output / "summary.json").read_text())
    assert summary["songs_in"] == summary["songs_ok"] == SONGS
    assert (summary["segments"], summary["shards"]) == (SONGS * SEGMENTS_PER_SONG, SONGS)
    assert (summary["units_failed"], summary["rejects"]) == (0, 0)
