"""A fourth codec, from the tests: found through an entry point, it runs through tokenize,
the spot-check, the audit and checkpoint conversion as the real jobs, with no change to
`pipeline/` or `jobs/` (docs/adding-a-codec.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from audio_codecs.base import CodecSpec
from tests.audio_codecs.toy_codec import PLUGIN
from tests.conftest import REPO_ROOT
from tests.pipeline.helpers import write_song


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A folder that installs the toy codec's entry point: what a package of it would."""
    root = tmp_path_factory.mktemp("toy-plugin")
    dist = root / "toy_codec_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-codec-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[mucodec_pipeline.codecs]\ntoy = tests.audio_codecs.toy_codec\n"
    )
    return root


def _job(plugin_path: Path, job: str, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_path), str(REPO_ROOT)])
    return subprocess.run(
        [sys.executable, "-m", f"jobs.{job}", *argv],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300,
    )  # fmt: skip


@pytest.mark.integration
def test_a_fourth_codec_runs_through_tokenize_spotcheck_and_audit(plugin_path, tmp_path):
    for seed in range(2):
        write_song(str(tmp_path / "corpus" / f"song{seed}.flac"), 2.5, seed=seed)
    out = tmp_path / "out"
    run = _job(
        plugin_path, "run", "--input", str(tmp_path / "corpus"), "--output", str(out),
        "--segment-seconds", "1", "--min-tail-seconds", "0.25", "--codec", "toy",
        "--config", "tiny", "--count", "2", "--num-cpus", "2",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    segments = json.loads((out / "prepared" / "summary.json").read_text())["segments"]
    rows = pq.read_table(out / "tokens" / "toy" / "tokens").to_pylist()
    assert len(rows) == segments == 6  # 2.5 s in 1 s segments, the tail kept.
    assert {(r["tokenizer"], r["codec_preset"], r["n_codebooks"]) for r in rows} == {
        ("toy", "tiny", 2)
    }
    spotcheck = json.loads((out / "spotcheck" / "summary.json").read_text())
    assert (spotcheck["codecs"], spotcheck["sampled"], spotcheck["missing"]) == (["toy"], 2, [])
    assert set(spotcheck["metrics"]["toy"]) >= {"mel_distance", "si_sdr_db"}

    audit = _job(plugin_path, "audit", "--shards", str(out / "prepared"), "--tokens",
                 str(out / "tokens"))  # fmt: skip
    assert audit.returncode == 0, audit.stderr[-3000:]
    assert json.loads(audit.stdout)["codecs"]["toy"]["ok"] is True


@pytest.mark.integration
def test_a_fourth_codec_converts_its_official_weights(plugin_path, tmp_path):
    official = tmp_path / "toy-official.json"
    official.write_text(json.dumps({"scale": 1.5}))
    ckpt = tmp_path / "toy-ckpt"
    converted = _job(plugin_path, "convert_checkpoint", "--codec", "toy", "--source",
                     str(official), "--preset", "tiny", "--output", str(ckpt))  # fmt: skip
    assert converted.returncode == 0, converted.stderr[-3000:]
    summary = json.loads(converted.stdout)
    codec = PLUGIN.load(CodecSpec("toy", checkpoint=str(ckpt)), device=None)
    assert codec.info.weights_sha256 == summary["sha256"] and codec.scale == 1.5
