"""`python -m jobs.demo` end to end with all three codecs: the demo corpus, one pass over the
shards into a table per codec, and a spot-check report that compares them.

The prepare output is checked in detail; the token tables and the report by their counts
and in headless Chromium (every codec's spectrograms and players). The corpus is the demo's
at half its length, and the spot-check decodes with the demo's window on a CPU (128 codes):
the real decoder, in seconds rather than minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from audio_codecs import registry
from jobs.demo import CPU_DECODER_WINDOW
from testing.demo_corpus import BROKEN_FILE, DEMO_SONGS, demo_segments
from tests.pipeline.helpers import open_in_chromium, read_samples

SCALE = 0.3  # Every song keeps one segment (a tail of 10 s or more) but the tiny intro.


@pytest.mark.integration
def test_demo_runs_end_to_end(tmp_path):
    corpus, output = tmp_path / "corpus", tmp_path / "out"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.demo",
            "--corpus",
            str(corpus),
            "--output",
            str(output),
            "--codec",
            ",".join(registry.codecs()),
            "--scale",
            str(SCALE),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    # One summary table names every stage's output; Ray's known-harmless lines are gone.
    lines = completed.stdout.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("stage ")) :]
    table = [line for line in lines if not line.startswith(" ")]  # Rows, not details.
    assert [line.split()[:2] for line in table] == [
        ["stage", "status"],
        ["prepare", "ok"],
        ["tokenize", "ok"],
        ["spotcheck", "ok"],
    ]
    assert table[3].endswith(str(output / "spotcheck" / "report.html"))
    # Under the prepare row its splits, drops and duplicate groups; under the tokenize row,
    # a line per codec with its steady rate and fixed costs.
    details = [line.strip() for line in lines if line.startswith(" ")]
    assert [line.split(":")[0] for line in details[:3]] == [
        "splits", "dropped", "near-duplicate groups",
    ]  # fmt: skip
    assert [line.split(":")[0] for line in details[3:]] == list(registry.codecs())
    assert all("steady" in line and "fixed" in line for line in details[3:])
    assert "{" not in completed.stdout
    for noise in (
        "constructor arguments",
        "Token authentication",
        "execution finished",
        "Progress bars disabled",
        "Traceback",
    ):
        assert noise not in completed.stderr, completed.stderr[-3000:]
    prepared = output / "prepared"
    summary = json.loads((prepared / "summary.json").read_text())
    segments = demo_segments(SCALE)  # Per song, under the job's default segmenting.
    expected = sum(segments.values())
    too_short = {path for path, count in segments.items() if not count}
    assert summary["segments"] == expected
    assert summary["songs_in"] == len(DEMO_SONGS) + 1
    assert (summary["songs_ok"], summary["songs_rejected"], summary["rejects"]) == (
        len(DEMO_SONGS) - len(too_short),
        len(too_short) + 1,
        len(too_short) + 1,
    )
    assert summary["units_failed"] == 0

    rejects = pq.read_table(prepared / "rejects.parquet").to_pylist()
    by_path = {os.path.relpath(r["path"], corpus): r for r in rejects}
    assert set(by_path) == {BROKEN_FILE, *too_short}
    assert by_path[BROKEN_FILE]["stage"] == "decode"
    assert all(by_path[path]["reason"].startswith("too short") for path in too_short)

    manifest = json.loads((prepared / "manifest.json").read_text())
    samples = read_samples([str(prepared / "shards" / s["name"]) for s in manifest["shards"]])
    assert len(samples) == len({s.key for s in samples}) == expected
    hot = [s for s in samples if s.meta["source"].endswith("hot float.wav")]
    assert hot and all(s.meta["gain"] < 1 < s.meta["song_peak"] for s in hot)
    surround = [s for s in samples if s.meta["source"].endswith("surround.m4a")]
    assert [s.meta["source_channels"] for s in surround] == [6]

    # The other two stages: every segment tokenized by every codec, two of them decoded by
    # each into the report.
    for codec in registry.codecs():
        tokens = json.loads((output / "tokens" / codec / "summary.json").read_text())
        assert (tokens["segments"], tokens["rejects"]) == (expected, 0), codec
    claim = json.loads((output / "spotcheck" / "_spotcheck" / "run.json").read_text())
    decoder = claim["codecs"]["mucodec"]["decoder"]
    assert decoder["window_codes"] == CPU_DECODER_WINDOW  # The demo's CPU default.
    spotcheck = json.loads((output / "spotcheck" / "summary.json").read_text())
    assert (spotcheck["sampled"], spotcheck["missing"]) == (2, [])
    assert sorted(spotcheck["codecs"]) == sorted(registry.codecs())
    errors, images, audios = open_in_chromium(
        output / "spotcheck" / "report.html", tmp_path / "report.png"
    )
    assert errors == []
    for codec in registry.codecs():
        assert len([i for i in images if i[0].endswith(f"{codec}/spectrogram.png")]) == 2
        assert len([a for a in audios if a.endswith(f"{codec}/reconstruction.wav")]) == 2
    assert all(complete and width > 100 for _, complete, width in images), images
