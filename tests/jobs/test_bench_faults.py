"""`python -m jobs.bench faults`: its command line and its round accounting. The soak itself
takes minutes and mounts a tmpfs, so it is not run here."""

from __future__ import annotations

from collections import Counter

import pytest

from jobs import bench
from jobs.benchmarks.fault_accounting import account, expected_segment_count, legitimate_rejects
from jobs.benchmarks.faults import KINDS, draw_faults
from pipeline.audit import AuditReport, DamagedShard


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit) as finished:
        bench.main(["faults", "--help"])
    assert finished.value.code == 0
    completed = capsys.readouterr()
    for option in ("--rounds", "--seed", "--scale", "--workdir", "--keep", "sigkill", "sigterm",
                   "full-disk"):  # fmt: skip
        assert option in completed.out


def test_only_the_broken_file_and_the_tiny_intro_are_rejects_at_the_soaks_scales():
    for scale in (0.5, 1.0, 2.0):
        assert legitimate_rejects(scale) == {"Artist D/broken.mp3", "Artist D/tiny-intro.wav"}
    assert expected_segment_count(0.5) < expected_segment_count(1.0) < expected_segment_count(2)


def test_a_seed_draws_the_same_faults_and_every_kind_in_each_run_of_three():
    faults = draw_faults(6, seed=3, kinds=KINDS)
    assert faults == draw_faults(6, seed=3, kinds=KINDS)
    assert sorted(f.kind for f in faults[:3]) == sorted(KINDS) == sorted(f.kind for f in faults[3:])
    assert all(f.stage == "prepare" for f in faults if f.kind == "full-disk")


def _reject(path: str, reason: str, stage: str = "decode") -> dict:
    return {"path": path, "stage": stage, "reason": reason, "song_id": None}


def test_accounting_of_a_round_against_the_clean_run():
    expected = {"a_00000", "a_00001", "b_00000", "c_00000"}
    # The shards: b twice (two shards), c gone, x never made by the clean run.
    shards = Counter({"a_00000": 1, "a_00001": 1, "b_00000": 2, "x_00000": 1})
    report = AuditReport(
        shard_samples=5, token_rows=5, rejected=0,
        missing=["a_00001"], duplicated=["a_00000"], unexpected=["y_00000"],
        damaged_shards=[DamagedShard("000003-0000.tar", "cut", rejected=True),
                        DamagedShard("000004-0000.tar", "cut", rejected=False)],
    )  # fmt: skip
    legitimate = {"Artist D/broken.mp3", "Artist D/tiny-intro.wav"}
    prepare_rejects = [
        _reject("Artist D/broken.mp3", "corrupt or unsupported: libsndfile: ..."),
        _reject("Artist A/song.wav", "OSError: [Errno 28] No space left on device"),
        _reject("Artist B/other.wav", "corrupt: decoded samples contain NaN"),
    ]
    tokenize_rejects = [_reject("000001-0000.tar#b_00000", "503 Service Unavailable", "tokenize")]

    counted = account(report, shards, expected, prepare_rejects, tokenize_rejects, legitimate)

    assert counted.lost == ["a_00001", "c_00000"]
    assert counted.duplicated == ["a_00000", "b_00000"]
    assert counted.unexpected == ["x_00000", "y_00000"]
    assert counted.damaged == ["000004-0000.tar"]  # The rejected one is accounted for.
    assert [r["path"] for r in counted.environment_rejects] == [
        "Artist A/song.wav", "000001-0000.tar#b_00000",
    ]  # fmt: skip
    assert [r["path"] for r in counted.stray_rejects] == ["Artist B/other.wav"]
    assert counted.missing_rejects == ["Artist D/tiny-intro.wav"]
    assert not counted.ok


def test_a_clean_round_accounts_to_nothing():
    keys = {"a_00000", "b_00000"}
    report = AuditReport(shard_samples=2, token_rows=2, rejected=0, missing=[], duplicated=[],
                         unexpected=[])  # fmt: skip
    rejects = [_reject("Artist D/broken.mp3", "corrupt"), _reject("tiny.wav", "too short")]
    counted = account(report, Counter(keys), keys, rejects, [], {"Artist D/broken.mp3", "tiny.wav"})
    assert counted.ok
