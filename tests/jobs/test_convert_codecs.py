"""`jobs.convert_checkpoint` converts DAC and EnCodec files too, and tokenize loads the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audio_codecs.base import CodecSpec
from audio_codecs.registry import load_codec
from core.checkpoint_dir import sha256_file
from jobs.cli import run_job
from jobs.convert_checkpoint import main as convert_main
from tests.audio_codecs.dac.conftest import load_golden_set
from tests.audio_codecs.encodec.test_checkpoint import _official_state, _th

CPU = torch.device("cpu")


def _convert(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert run_job(convert_main, argv) == 0
    return json.loads(capsys.readouterr().out)


def test_dac_pth_converts_and_loads_by_checkpoint(dac_golden: Path, tmp_path: Path, capsys) -> None:
    golden = load_golden_set(dac_golden, "44k")
    pth = tmp_path / "weights.pth"
    torch.save({"state_dict": golden.official_state,
                "metadata": {"kwargs": golden.official_kwargs}}, pth)  # fmt: skip

    out = tmp_path / "dac-ckpt"
    summary = _convert(["--codec", "dac", "--source", str(pth), "--output", str(out)], capsys)

    assert summary["sha256"] == sha256_file(out / "model.safetensors")
    codec = load_codec(CodecSpec("dac", checkpoint=str(out)), CPU)
    assert codec.info.weights_sha256 == summary["sha256"]
    assert (
        run_job(convert_main, ["--codec", "dac", "--source", str(pth), "--output", str(out)]) == 2
    )


def test_encodec_th_converts_with_its_preset(encodec_golden: Path, tmp_path: Path, capsys) -> None:
    th = _th(tmp_path, _official_state(encodec_golden, "48k"))
    out = tmp_path / "encodec-ckpt"
    argv = ["--codec", "encodec", "--source", str(th), "--output", str(out)]

    assert run_job(convert_main, argv) == 2  # Which model the file holds is not in it.
    assert "--preset" in capsys.readouterr().err
    summary = _convert([*argv, "--preset", "tiny_48k"], capsys)

    codec = load_codec(CodecSpec("encodec", checkpoint=str(out)), CPU)
    assert codec.info.weights_sha256 == summary["sha256"] and codec.num_codebooks == 4
