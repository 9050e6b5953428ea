"""What every job promises on the command line: help for every option, usage errors as one
`error:` line with status 2 before Ray starts, a private local Ray unless told otherwise, a
prompt stop on SIGTERM that a rerun resumes, and one summary table."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import pipeline.execution
from core.errors import CheckpointError, InvalidSetting, UnsupportedVersion
from core.safe_load import CheckpointFormatError
from jobs import audit, convert_checkpoint, demo, prepare, run, spotcheck, tokenize
from jobs.cli import run_job
from jobs.console import StageOutcome, format_outcomes
from mucodec.decoder.config import DECODER_PRESETS
from mucodec.encoder.config import PRESETS
from testing.synth import synth_song, write_audio

PARSERS = {
    "prepare": prepare.build_parser,
    "tokenize": tokenize.build_parser,
    "spotcheck": spotcheck.build_parser,
    "run": run.build_parser,
    "audit": audit.build_parser,
    "demo": demo.build_parser,
    "convert_checkpoint": convert_checkpoint.build_parser,
}
JOB_MAINS = {"prepare": prepare.main, "tokenize": tokenize.main,
             "spotcheck": spotcheck.main, "run": run.main, "audit": audit.main,
             "demo": demo.main}  # fmt: skip


@pytest.mark.parametrize("job", sorted(PARSERS))
def test_every_option_has_help_text(job):
    parser = PARSERS[job]()
    undocumented = [
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
        and not (action.help or "").strip()
    ]  # fmt: skip
    assert undocumented == []


@pytest.mark.parametrize("job", ["tokenize", "run"])
def test_help_lists_the_tokenizer_presets(job):
    text = PARSERS[job]().format_help()
    assert all(name in text for name in PRESETS)


def test_help_lists_the_decoder_presets_and_the_ray_policy():
    text = spotcheck.build_parser().format_help()
    assert all(name in text for name in DECODER_PRESETS)
    assert "private local Ray" in text and "RAY_ADDRESS" in text


@pytest.fixture
def ray_must_not_start(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray started before the usage error was reported")

    monkeypatch.setattr(pipeline.execution, "start_ray", refuse)
    monkeypatch.setattr("jobs.cli.start_ray", refuse)


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    write_audio(str(root / "a.flac"), synth_song(1.5, 48_000, 2, 0), 48_000, "PCM_16")
    return root


def _usage_cases(tmp_path: Path, corpus: Path) -> list[tuple[str, list[str], str]]:
    out, missing = str(tmp_path / "out"), str(tmp_path / "nowhere")
    source = ["--input", str(corpus), "--output", out]
    shards = ["--shards", str(corpus), "--output", out]
    spot = ["--tokens", str(corpus), "--shards", str(corpus), "--output", out]
    window = ["--decoder-window", "30"]
    return [
        ("prepare", ["--input", missing, "--output", out], "nowhere"),
        ("prepare", [*source, "--segment-seconds", "0"], "--segment-seconds"),
        ("prepare", [*source, "--songs-per-unit", "-1"], "--songs-per-unit"),
        ("prepare", [*source, "--storage-option", "novalue"], "KEY=VALUE"),
        ("prepare", [*source, "--scratch-dir", missing], "--scratch-dir"),
        ("prepare", [*source, "--allow-root", ""], "--allow-root"),
        ("prepare", [*source, "--max-lyrics-bytes", "0"], "--max-lyrics-bytes"),
        ("prepare", [*source, "--address", "127.0.0.1:1", "--num-cpus", "1"], "--num-cpus"),
        ("tokenize", [*shards, "--config", "huge"], "tiny"),
        ("tokenize", [*shards, "--config", "tiny", "--batch-size", "0"], "--batch-size"),
        ("tokenize", [*shards, "--config", "tiny", "--stall-minutes", "0"], "--stall-minutes"),
        ("tokenize", [*shards, "--checkpoint", missing], "--checkpoint"),
        ("tokenize", ["--shards", missing, "--output", out, "--config", "tiny"], "--shards"),
        ("spotcheck", [*spot, "--count", "2", "--decoder-config", "huge"], "tiny"),
        ("spotcheck", [*spot, "--fraction", "2", "--decoder-config", "tiny"], "--fraction"),
        ("spotcheck", [*spot, "--count", "2", "--official-mucodec", missing], "audioldm"),
        ("spotcheck", [*spot, "--count", "2", "--decoder-checkpoint", missing], "nowhere"),
        ("spotcheck", [*spot, "--count", "2", "--decoder-config", "tiny", *window], "of 4"),
        ("run", [*source, "--config", "huge"], "tiny"),
        ("run", [*source, "--config", "tiny", "--decoder-config", "huge"], "tiny"),
        ("run", ["--input", missing, "--output", out, "--config", "tiny"], "nowhere"),
        ("run", [*source, "--config", "tiny", "--allow-root", "cache::s3://b"], "--allow-root"),
        ("audit", ["--shards", missing, "--tokens", out], "nowhere"),
        ("demo", ["--scale", "-2"], "--scale"),
    ]


def test_usage_errors_are_one_line_with_status_2_before_ray_starts(
    tmp_path, corpus, capsys, ray_must_not_start
):
    for job, argv, mentioned in _usage_cases(tmp_path, corpus):
        try:
            status = run_job(JOB_MAINS[job], argv)
        except SystemExit as exit_info:  # argparse's own refusals exit from parse_args.
            status = exit_info.code
        printed = capsys.readouterr()
        lines = printed.err.strip().splitlines()
        assert status == 2, (job, argv, printed.err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (job, argv, printed.err)
        assert mentioned in lines[0], (job, argv, lines[0])
        assert "Traceback" not in printed.err and printed.out == ""


def test_an_unknown_preset_is_refused_by_the_real_command_in_seconds(tmp_path, corpus):
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "jobs.tokenize", "--shards", str(corpus), "--output",
         str(tmp_path / "out"), "--config", "huge"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 2
    assert completed.stderr.startswith("error: --config: mucodec has no preset 'huge' (known: ")
    assert len(completed.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60


# A stage's own usage errors come after Ray would start: these tests skip starting it.


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setattr(prepare, "start_job", lambda args: None)


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    "name, text, mentioned",
    [
        ("songs.jsonl", '{"file": "a.flac"}\n', "has no 'path' column"),
        ("songs.json", '[{"path": "a.flac",', "cannot be read"),
        ("songs.jsonl", b"\xff\xfe{".decode("latin-1"), "cannot be read"),
    ],
)
def test_a_manifest_that_cannot_be_read_is_a_usage_error(
    tmp_path, capsys, no_ray, name, text, mentioned
):
    manifest = tmp_path / "catalog" / name
    manifest.parent.mkdir()
    manifest.write_bytes(text.encode("latin-1"))
    status = run_job(prepare.main, ["--input", str(manifest), "--output", str(tmp_path / "o")])
    printed = capsys.readouterr()
    assert status == 2, printed.err
    assert len(_error_lines(printed.err)) == 1 and mentioned in printed.err
    assert "Traceback" not in printed.err and "REFUSED" in printed.out


def test_a_valueerror_from_a_bug_is_not_taken_for_a_usage_error(tmp_path, corpus, monkeypatch):
    """A ValueError is a bug unless it is of a kind of core.errors: run_job lets it through."""
    monkeypatch.setattr(prepare, "start_job", lambda args: None)

    def buggy_stage(*args, **kwargs):
        raise ValueError("a bug deep in the stage")

    monkeypatch.setattr(prepare, "prepare_corpus", buggy_stage)
    with pytest.raises(ValueError, match="a bug deep in the stage"):
        run_job(prepare.main, ["--input", str(corpus), "--output", str(tmp_path / "out")])


def test_a_valueerror_from_a_bug_exits_1_with_its_traceback(tmp_path, corpus):
    # The real entry point (main_entry), with the stage replaced by one that has a bug.
    script = (
        "import jobs.prepare as job\n"
        "from jobs.cli import main_entry\n"
        "def buggy_stage(*args, **kwargs):\n"
        "    raise ValueError('a bug deep in the stage')\n"
        "job.start_job = lambda args: None\n"
        "job.prepare_corpus = buggy_stage\n"
        "main_entry(job.main)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, "--input", str(corpus), "--output", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120, env=_job_env(),
    )  # fmt: skip
    assert completed.returncode == 1, completed.stderr
    assert "Traceback" in completed.stderr
    assert "ValueError: a bug deep in the stage" in completed.stderr
    assert _error_lines(completed.stderr) == []


def test_an_invalid_setting_found_by_a_stage_is_a_usage_error(tmp_path, corpus, capsys, no_ray,
                                                              monkeypatch):  # fmt: skip
    def refusing_stage(*args, **kwargs):
        raise InvalidSetting("4 actors x 2 CPUs leave none of the 8 CPUs; lower --actors")

    monkeypatch.setattr(prepare, "prepare_corpus", refusing_stage)
    status = run_job(prepare.main, ["--input", str(corpus), "--output", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert status == 2
    assert _error_lines(printed.err) == [
        "error: 4 actors x 2 CPUs leave none of the 8 CPUs; lower --actors"
    ]


@pytest.mark.parametrize(
    "error",
    [
        CheckpointError("ckpt/: missing keys: ['rvq.0.codebook']"),
        CheckpointFormatError("ckpt.pt: not a zip or legacy PyTorch file"),
        UnsupportedVersion("prepared/manifest.json: manifest version 9 is not supported"),
    ],
    ids=type,
)
def test_inputs_of_the_wrong_kind_are_usage_errors(tmp_path, corpus, capsys, no_ray, monkeypatch,
                                                   error):  # fmt: skip
    def refusing_stage(*args, **kwargs):
        raise error

    monkeypatch.setattr(prepare, "prepare_corpus", refusing_stage)
    status = run_job(prepare.main, ["--input", str(corpus), "--output", str(tmp_path / "out")])
    printed = capsys.readouterr()
    assert status == 2
    assert _error_lines(printed.err) == [f"error: {error}"]


def test_the_summary_table_lines_up_and_names_every_output():
    table = format_outcomes(
        [
            StageOutcome("prepare", 0, "7/9 songs", 2, 8.6, "/out/prepared"),
            StageOutcome("tokenize", 1, "12 segments", 0, 75.0, "/out/tokens"),
            StageOutcome("spotcheck", 143, "", None, 3700.0, "/out/spotcheck/report.html"),
        ]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["stage", "status", "result", "rejects", "wall", "output"]
    assert len(lines) == 4
    assert [line.split()[1] for line in lines[1:]] == ["ok", "FAILED", "INTERRUPTED"]
    assert "8.6 s" in lines[1] and "1m15s" in lines[2] and "1h01m" in lines[3]
    assert len({line.index("/out") for line in lines[1:]}) == 1  # One output column.


def test_each_codec_gets_a_line_under_the_tokenize_row():
    codecs = ("mucodec: 12 segments; steady 3.1 segments/s", "dac: 12 segments")
    table = format_outcomes(
        [
            StageOutcome("prepare", 0, "7/9 songs", 2, 8.6, "/out/prepared"),
            StageOutcome("tokenize", 0, "2 codecs", 0, 75.0, "/out/tokens", codecs),
        ]
    )
    lines = table.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [
        ["stage", "status"], ["prepare", "ok"], ["tokenize", "ok"],
    ]  # fmt: skip
    # The details sit under the result column and never widen the table's columns.
    result_column = lines[0].index("result")
    assert [line.index(line.strip()) for line in lines[3:]] == [result_column] * 2
    assert lines[3].strip().startswith("mucodec:") and lines[4].strip() == "dac: 12 segments"
    assert lines[2].index("/out") == lines[1].index("/out")


# --- Where Ray runs --------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(extra)
    return env


def _prepare_command(corpus: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jobs.prepare", "--input", str(corpus), "--output",
            str(output), "--segment-seconds", "1", "--min-tail-seconds", "0.5", *extra]  # fmt: skip


@pytest.mark.integration
def test_a_dead_ray_address_fails_fast_with_one_error_line(tmp_path, corpus):
    address = f"127.0.0.1:{_closed_port()}"
    for extra, env in (([], _job_env(RAY_ADDRESS=address)), (["--address", address], _job_env())):
        started = time.monotonic()
        completed = subprocess.run(
            _prepare_command(corpus, tmp_path / "out", *extra),
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        assert completed.returncode == 1, completed.stderr
        errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and address in errors[0], completed.stderr
        assert "Traceback" not in completed.stderr
        assert elapsed < 45, f"took {elapsed:.0f} s"


@pytest.mark.integration
def test_a_dead_head_left_in_rays_temp_dir_is_never_joined(tmp_path, corpus):
    # A `ray start --head` that is gone left its address in <temp>/ray/ray_current_cluster;
    # Ray's default would retry it for minutes. Short path: Ray's sockets live under it.
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    (temp / "ray").mkdir()
    dead = f"127.0.0.1:{_closed_port()}"
    (temp / "ray" / "ray_current_cluster").write_text(dead)
    env = _job_env(RAY_TMPDIR=str(temp))
    try:
        started = time.monotonic()
        completed = subprocess.run(
            _prepare_command(corpus, tmp_path / "out", "--num-cpus", "1"),
            capture_output=True, text=True, env=env, timeout=240,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert time.monotonic() - started < 120
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["songs_ok"] == 1

    finally:
        subprocess.run(["rm", "-rf", str(temp)], check=False)


# --- What reaches stdout ---------------------------------------------------------------------

# A job whose Ray task prints on both streams, then crashes its worker once: Ray retries it
# and says so to the driver ("(raylet) A worker died ...", "... will be retried"), from a
# thread of its own, around the summary table. The lines come late: the job waits for them.
CRASHING_JOB = textwrap.dedent(
    """
    import os, sys, time
    import ray
    from jobs.cli import JobParser, add_ray_arguments, main_entry, start_job
    from jobs.console import StageOutcome, print_outcomes

    @ray.remote(max_retries=1)
    def crash_once(marker):
        print("worker stdout line", flush=True)
        print("worker stderr line", file=sys.stderr, flush=True)
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return 1

    def main(argv):
        parser = JobParser("crashing-job", None)
        parser.add_argument("marker")
        add_ray_arguments(parser)
        args = parser.parse_args(argv)
        start_job(args)
        ray.get(crash_once.remote(args.marker))
        print_outcomes([StageOutcome("crash", 0, "1 task retried")])
        time.sleep(1)
        return 0

    main_entry(main)
    """
)
RAY_LINES = ("worker stdout line", "worker stderr line", "(raylet)")


@pytest.mark.integration
@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_stdout_is_the_summary_alone_whatever_ray_prints(tmp_path, verbose):
    command = [sys.executable, "-c", CRASHING_JOB, str(tmp_path / "crashed"), "--num-cpus", "1"]
    completed = subprocess.run(command + ["--verbose"] * verbose, capture_output=True,
                               text=True, env=_job_env(), timeout=180)  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert (tmp_path / "crashed").exists()  # The worker did crash and its task was retried.
    table = format_outcomes([StageOutcome("crash", 0, "1 task retried")])
    assert completed.stdout == table + "\n", completed.stdout
    # Quiet, Ray's lines stay in its session logs; with --verbose they are shown, on stderr.
    shown = [line for line in RAY_LINES if line in completed.stderr]
    assert shown == (list(RAY_LINES) if verbose else []), completed.stderr[-3000:]
