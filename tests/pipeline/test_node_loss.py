"""Losing a Ray node during prepare or tokenize: the stage ends within a bounded time, and a
rerun on the smaller cluster finishes the work with every segment exactly once."""

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
from pipeline.prepare.stage import prepare_corpus
from pipeline.shard_reader import find_shards
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import small_config, write_song

SONGS = 6
SEGMENTS = 18  # Three 1 s segments per 3 s song.

# A head and a worker of one CPU each; the worker is removed once the stage has finished its
# first unit (its first marker file). The jobs' --stall-minutes 0.5 ends a stalled stage
# after 30 s (Ray Data's default is 30 minutes) to keep this short.
SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from pathlib import Path
    from ray.cluster_utils import Cluster

    markers, command = Path(sys.argv[1]), json.loads(sys.argv[2])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    env = dict(os.environ, RAY_ADDRESS=cluster.address)
    try:
        job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while not list(markers.glob("*.json")):
            if job.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        cluster.remove_node(worker)
        killed = time.monotonic()
        stdout, stderr = job.communicate(timeout=240)
        stopped = time.monotonic() - killed
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        print(json.dumps({"first": job.returncode, "first_stdout": stdout,
                          "first_stderr": stderr[-3000:], "stopped_after_s": stopped,
                          "rerun": rerun.returncode, "rerun_stdout": rerun.stdout,
                          "rerun_stderr": rerun.stderr[-3000:]}))
    finally:
        cluster.shutdown()
    """
)


def _lose_a_node(stage: str, markers: str, command: list[str]) -> dict:
    """Run `command` on a two-node cluster, remove the worker node mid-stage, then rerun."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO_ROOT))
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, markers, json.dumps(command)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    # Ray may recover by itself (exit 0); if the stage stalls it must say so and stop.
    assert outcome["first"] in (0, 1), outcome["first_stderr"]
    if outcome["first"] == 1:
        assert "rerun the same command" in outcome["first_stderr"]
    assert outcome["stopped_after_s"] < 150
    assert outcome["rerun"] == 0, outcome["rerun_stderr"]
    # What Ray says of the lost node (raylet and worker lines) never reaches stdout.
    _assert_only_the_summary(outcome["first_stdout"], stage, outcome["first"])
    _assert_only_the_summary(outcome["rerun_stdout"], stage, outcome["rerun"])
    return outcome


def _assert_only_the_summary(stdout: str, stage: str, exit_status: int) -> None:
    """`stdout` is the summary table alone: its header, then the stage's row."""
    rows = [line.split()[:2] for line in stdout.splitlines()]
    assert rows == [["stage", "status"], [stage, STATUS_WORDS[exit_status]]], stdout


def _write_corpus(root: str) -> str:
    for index in range(SONGS):
        write_song(os.path.join(root, "corpus", f"song{index}.flac"), 3.0, seed=index)
    return os.path.join(root, "corpus")


@pytest.mark.integration
def test_prepare_survives_losing_a_node_and_a_rerun_completes(tmp_path):
    corpus = _write_corpus(str(tmp_path))
    prepared = str(tmp_path / "prepared")
    _lose_a_node(
        "prepare",
        os.path.join(prepared, "_prepare", "units"),
        [sys.executable, "-m", "jobs.prepare", "--input", corpus, "--output", prepared,
         "--segment-seconds", "1", "--min-tail-seconds", "0.25", "--songs-per-unit", "1",
         "--scratch-dir", str(tmp_path), "--stall-minutes", "0.5"],
    )  # fmt: skip
    keys: Counter = Counter()
    for shard in find_shards(prepared, StorageOptions()):
        shard_keys, damage = read_shard_keys(shard, StorageOptions())
        assert not damage, (shard.name, damage)
        keys.update(shard_keys)
    assert len(keys) == SEGMENTS and set(keys.values()) == {1}, keys
    assert pq.read_table(os.path.join(prepared, "rejects.parquet")).num_rows == 0


@pytest.mark.integration
def test_tokenize_survives_losing_a_node_and_a_rerun_completes(tmp_path, ray_local):
    corpus = _write_corpus(str(tmp_path))
    prepared = str(tmp_path / "prepared")
    config = small_config(str(tmp_path), songs_per_unit=1)
    assert prepare_corpus(corpus, prepared, config).segments == SEGMENTS
    tokens = str(tmp_path / "tokens")
    _lose_a_node(
        "tokenize",
        os.path.join(tokens, "mucodec", "_tokenize", "parts"),
        [sys.executable, "-m", "jobs.tokenize", "--shards", prepared, "--output", tokens,
         "--config", "tiny", "--shards-per-part", "1", "--batch-size", "1",
         "--stall-minutes", "0.5"],
    )  # fmt: skip
    report = audit_run(prepared, tokens, StorageOptions()).codecs["mucodec"]
    assert report.ok and report.token_rows == report.shard_samples == SEGMENTS
