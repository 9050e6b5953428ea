"""Losing a Ray node during prepare and then during tokenize, on one cluster: each stage ends
within a bounded time, and a rerun on the smaller cluster finishes the work with every
segment exactly once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pyarrow.parquet as pq
import pytest

from jobs.console import STATUS_WORDS
from pipeline.audit import audit_run, read_shard_keys
from pipeline.io import StorageOptions
from pipeline.shard_reader import find_shards
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import write_song

# Its own cluster, not the session's Ray: in the "ray" group only to even out the two groups
# of integration tests (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("ray")

SONGS = 6
SEGMENTS = 18  # Three 1 s segments per 3 s song.

# One cluster for both stages, a head of one CPU: for each stage a worker of one CPU joins,
# and is removed once the stage has finished its first unit (its first marker file); the
# stage is then rerun on the head alone (one CPU: tokenize's actor and its shard readers
# share it, half a CPU each). The jobs' --stall-minutes 0.5 ends a stalled stage
# after 30 s (Ray Data's default is 30 minutes) to keep this short.
SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from pathlib import Path
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    env = dict(os.environ, RAY_ADDRESS=cluster.address)
    outcomes = []
    try:
        for markers, command in json.loads(sys.argv[1]):
            worker = cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 180
            while not list(Path(markers).glob("*.json")):
                if job.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            cluster.remove_node(worker)
            killed = time.monotonic()
            stdout, stderr = job.communicate(timeout=240)
            stopped = time.monotonic() - killed
            rerun = subprocess.run(command, env=env, capture_output=True, text=True,
                                   timeout=240)
            outcomes.append({"first": job.returncode, "first_stdout": stdout,
                             "first_stderr": stderr[-3000:], "stopped_after_s": stopped,
                             "rerun": rerun.returncode, "rerun_stdout": rerun.stdout,
                             "rerun_stderr": rerun.stderr[-3000:]})
        print(json.dumps(outcomes))
    finally:
        cluster.shutdown()
    """
)


def _lose_a_node_in_each(stages: list[tuple[str, str, list[str]]]) -> None:
    """Run each (stage, markers, command) in turn on one cluster, losing a node mid-stage."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO_ROOT))
    plan = [[markers, command] for _, markers, command in stages]
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(plan)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcomes = json.loads(completed.stdout.strip().splitlines()[-1])
    for (stage, _, _), outcome in zip(stages, outcomes, strict=True):
        # Ray may recover by itself (exit 0); if the stage stalls it must say so and stop.
        assert outcome["first"] in (0, 1), (stage, outcome["first_stderr"])
        if outcome["first"] == 1:
            assert "rerun the same command" in outcome["first_stderr"], stage
        assert outcome["stopped_after_s"] < 150, stage
        assert outcome["rerun"] == 0, (stage, outcome["rerun_stderr"])
        # What Ray says of the lost node (raylet and worker lines) never reaches stdout.
        _assert_only_the_summary(outcome["first_stdout"], stage, outcome["first"])
        _assert_only_the_summary(outcome["rerun_stdout"], stage, outcome["rerun"])


def _assert_only_the_summary(stdout: str, stage: str, exit_status: int) -> None:
    """`stdout` is the summary table alone: its header, then the stage's row (and the
    lines under it, one per codec)."""
    rows = [line.split()[:2] for line in stdout.splitlines() if not line.startswith(" ")]
    assert rows == [["stage", "status"], [stage, STATUS_WORDS[exit_status]]], stdout


def _write_corpus(root: str) -> str:
    for index in range(SONGS):
        write_song(os.path.join(root, "corpus", f"song{index}.flac"), 3.0, seed=index)
    return os.path.join(root, "corpus")


@pytest.mark.integration
def test_prepare_then_tokenize_survive_losing_a_node_and_reruns_complete(tmp_path):
    corpus = _write_corpus(str(tmp_path))
    prepared, tokens = str(tmp_path / "prepared"), str(tmp_path / "tokens")
    prepare = [
        sys.executable, "-m", "jobs.prepare", "--input", corpus, "--output", prepared,
        "--segment-seconds", "1", "--min-tail-seconds", "0.25", "--songs-per-unit", "1",
        "--scratch-dir", str(tmp_path), "--stall-minutes", "0.5",
    ]  # fmt: skip
    tokenize = [
        sys.executable, "-m", "jobs.tokenize", "--shards", prepared, "--output", tokens,
        "--config", "tiny", "--shards-per-part", "1", "--batch-size", "1",
        "--stall-minutes", "0.5",
    ]  # fmt: skip
    _lose_a_node_in_each([
        ("prepare", os.path.join(prepared, "_prepare", "units"), prepare),
        ("tokenize", os.path.join(tokens, "mucodec", "_tokenize", "parts"), tokenize),
    ])  # fmt: skip

    keys: Counter = Counter()
    for shard in find_shards(prepared, StorageOptions()):
        shard_keys, damage = read_shard_keys(shard, StorageOptions())
        assert not damage, (shard.name, damage)
        keys.update(shard_keys)
    assert len(keys) == SEGMENTS and set(keys.values()) == {1}, keys
    assert pq.read_table(os.path.join(prepared, "rejects.parquet")).num_rows == 0
    report = audit_run(prepared, tokens, StorageOptions()).codecs["mucodec"]
    assert report.ok and report.token_rows == report.shard_samples == SEGMENTS
