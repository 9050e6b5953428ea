"""Checkpoints: safe reading, strict verification, full-size manifests, the converter."""

from __future__ import annotations

import argparse
import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from audio_codecs.mucodec.checkpoint import convert_official
from core.checkpoint_dir import sha256_file
from core.errors import CheckpointError
from core.key_map import map_key
from core.safe_load import InertObject, load_checkpoint
from jobs.cli import run_job
from jobs.convert_checkpoint import main as convert_main
from mucodec.encoder import checkpoint as ckpt
from mucodec.encoder.builders import build_encoder, build_quantizer
from mucodec.encoder.config import official, preset, tiny
from mucodec.encoder.tokenizer import MuCodecTokenizer
from tests.mucodec.conftest import official_tiny_state

MARKER = "mucodec_test_payload_ran"


class _Payload:
    """Pickles as a call to os.system: loading it must not run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _TrainerConfig:
    def __init__(self) -> None:
        self.lr = 1e-4
        self.layers = [1, 2]


def _write_fake_fairseq(path: Path, model: dict[str, torch.Tensor], marker: Path) -> None:
    """A fairseq-style checkpoint: weights under "model", config objects, optimizer state."""
    parameter = torch.nn.Parameter(torch.randn(3))
    optimizer = torch.optim.Adam([parameter])
    parameter.sum().backward()
    optimizer.step()
    torch.save(
        {
            "args": argparse.Namespace(arch="muq", encoder_depth=3),
            "cfg": {"model": _TrainerConfig(), "task": {"label_rate": 25}},
            "model": OrderedDict(model),
            "optimizer_history": [{"criterion_name": "x", "num_updates": 10}],
            "last_optimizer_state": optimizer.state_dict(),
            "extra_state": {"payload": _Payload(marker), "tags": {"a", "b"}},
        },
        path,
    )


@pytest.fixture(scope="module")
def official_files(tmp_path_factory, encoder_golden: Path) -> dict[str, Path]:
    """Golden tiny weights written as an official muq.pt (fairseq) and mucodec.pt."""
    root = tmp_path_factory.mktemp("official")
    state = official_tiny_state(encoder_golden)
    muq = {k.removeprefix("muencoder."): v for k, v in state.items() if k.startswith("muencoder.")}
    rest = {k: v for k, v in state.items() if not k.startswith("muencoder.")}
    rest["cfm_wrapper.estimator.proj.weight"] = torch.zeros(2, 2)  # decoder keys are ignored
    files = {"muq": root / "muq.pt", "mucodec": root / "mucodec.pt", "full": root / "full.pt"}
    _write_fake_fairseq(files["muq"], muq, root / MARKER)
    torch.save(rest, files["mucodec"])
    torch.save(state, files["full"])
    return files


def test_fairseq_checkpoint_loads_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / MARKER
    path = tmp_path / "fake.pt"
    weights = {"model.w": torch.randn(4, 3), "model.v": torch.randn(5, 6)[1:, ::2]}
    _write_fake_fairseq(path, weights, marker)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # what our reader has to cope with

    loaded = load_checkpoint(path)

    assert not marker.exists()
    for key, value in weights.items():
        assert torch.equal(loaded["model"][key], value)
    payload = loaded["extra_state"]["payload"]
    assert isinstance(payload, InertObject) and payload.qualified_name.endswith(".system")
    assert isinstance(loaded["args"], InertObject)
    assert loaded["args"].state == {"arch": "muq", "encoder_depth": 3}
    assert loaded["cfg"]["task"] == {"label_rate": 25}
    assert loaded["extra_state"]["tags"] == {"a", "b"}
    assert set(loaded["last_optimizer_state"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}


def test_official_files_give_the_golden_tokens(
    official_files: dict[str, Path], golden_inputs, golden_outputs
) -> None:
    tokenizer = MuCodecTokenizer.from_checkpoint(
        muq=official_files["muq"], mucodec=official_files["mucodec"], config=tiny()
    )

    codes = tokenizer.encode_segments([golden_inputs["input_a"]])[0]

    assert torch.equal(codes, golden_outputs["codes"][0])
    assert len(tokenizer.checkpoint_sha256.split("+")) == 2
    # What loading verified and dropped is kept where the caller can see it.
    report = tokenizer.load_report
    assert report is not None and report.encoder_source == str(official_files["muq"])
    assert "model.conformer.layers.2.ffn1.output_dense.weight" in report.dropped
    assert report.differing_copies == []


def test_encoder_weights_in_mucodec_pt_take_precedence(
    official_files: dict[str, Path], tmp_path: Path, encoder_golden: Path
) -> None:
    muq = ckpt.read_muq_checkpoint(official_files["muq"])
    stale = {k: v.clone() for k, v in muq.items()}
    stale["model.conv.linear.bias"] += 1.0
    mucodec = ckpt.read_mucodec_checkpoint(official_files["full"])
    model = MuCodecTokenizer._empty(tiny())

    state, report = ckpt.map_official_state(tiny(), model.state_dict().keys(), mucodec, stale)

    assert report.encoder_source == "mucodec.pt"
    assert report.differing_copies == ["model.conv.linear.bias"]
    assert torch.equal(state["encoder.subsampling.proj.bias"], muq["model.conv.linear.bias"])
    # Blocks past the selected layer and the pre-training extras are verified, then dropped.
    assert "model.conformer.layers.2.ffn1.output_dense.weight" in report.dropped
    assert "model.linear.weight" in report.dropped


def _refused(state: dict[str, torch.Tensor], match: str) -> None:
    model = MuCodecTokenizer._empty(tiny())
    with pytest.raises(CheckpointError, match=match):
        ckpt.map_official_state(tiny(), model.state_dict().keys(), state)


def test_missing_misshapen_and_unknown_keys_are_refused(encoder_golden: Path) -> None:
    good = official_tiny_state(encoder_golden)
    key = "muencoder.model.conformer.layers.2.ffn2.output_dense.weight"  # even a dead one

    _refused({k: v for k, v in good.items() if k != key}, r"missing keys: \[model\.conformer")
    _refused({**good, key: torch.zeros(3, 3)}, r"wrong shapes: .*checkpoint \(3, 3\)")
    _refused({**good, "muencoder.model.conformer.extra.weight": torch.zeros(1)}, "unexpected keys")
    rvq = "rvq_muencoder_emb.quantizers.0.codebook.weight"
    _refused({k: v for k, v in good.items() if k != rvq}, r"missing keys \(RVQ\)")
    _refused({**good, "rvq_muencoder_emb.quantizers.1.codebook.weight": good[rvq]}, "RVQ layout")
    _refused({k: v for k, v in good.items() if not k.startswith("muencoder.")}, "give muq.pt")


def test_wrong_files_are_refused(official_files: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        ckpt.read_muq_checkpoint(junk)
    with pytest.raises(CheckpointError, match=r"looks like muq\.pt"):
        ckpt.read_mucodec_checkpoint(official_files["muq"])
    with pytest.raises(CheckpointError, match=r"looks like mucodec\.pt"):
        ckpt.read_muq_checkpoint(official_files["full"])
    with pytest.raises(FileNotFoundError):
        ckpt.read_muq_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="wrong shapes"):
        MuCodecTokenizer.from_checkpoint(mucodec=official_files["full"], config=official())


def _manifest(encoder_golden: Path, name: str) -> dict[str, dict]:
    data = json.loads((encoder_golden / f"manifest_{name}.json").read_text())
    return {t["key"]: t for t in data["tensors"]}


@pytest.mark.parametrize("depth", [12, 13])
def test_full_size_muq_layout_matches_manifest(encoder_golden: Path, depth: int) -> None:
    manifest = _manifest(encoder_golden, f"muq_full_depth{depth}")
    config = official()
    encoder = config.encoder.__class__(**{**config.encoder.to_dict(), "depth": depth})

    expected = ckpt.expected_muq_shapes(encoder)

    assert {k: tuple(t["shape"]) for k, t in manifest.items()} == expected


def test_full_size_model_keys_map_onto_the_needed_manifest_entries(encoder_golden: Path) -> None:
    manifest = _manifest(encoder_golden, "muq_full_depth12")
    config = official()
    with torch.device("meta"):
        encoder = build_encoder(config.encoder)
        quantizer = build_quantizer(config.quantizer)
    ours = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    ours["frontend.mel.spectrogram.window"] = (2048,)
    ours["frontend.mel.mel_scale.fb"] = (1025, 128)

    mapped = {map_key(k.removeprefix("model."), ckpt.MUQ_KEY_MAP): k for k in manifest}
    used = {mapped[k] for k in ours}

    assert used == {k for k, t in manifest.items() if t["needed_for_layer_results_6"]}
    for key, shape in ours.items():
        assert tuple(manifest[mapped[key]]["shape"]) == shape, key
    rvq = _manifest(encoder_golden, "rvq_full")
    assert {
        f"rvq_muencoder_emb.{k}": tuple(v.shape) for k, v in quantizer.state_dict().items()
    } == {k: tuple(t["shape"]) for k, t in rvq.items()}
    pcad = _manifest(encoder_golden, "pcad_non_decoder")
    kernel = MuCodecTokenizer.from_config(tiny()).frontend.resampler.kernel
    assert tuple(pcad["rsq48tomuencoder.kernel"]["shape"]) == tuple(kernel.shape)


def test_high_bitrate_layout_builds_on_meta() -> None:
    with torch.device("meta"):
        quantizer = build_quantizer(preset("high_bitrate").quantizer)
    assert quantizer.state_dict()["quantizers.3.codebook.weight"].shape == (10000, 32)


def _tokenizer_files(files: dict[str, Path]) -> dict[str, str]:
    """The two official files the converter reads."""
    return {name: str(files[name]) for name in ("mucodec", "muq")}


def test_converter_round_trip(
    official_files: dict[str, Path], tmp_path: Path, golden_inputs, golden_outputs
) -> None:
    out = tmp_path / "converted"

    summary = convert_official(_tokenizer_files(official_files), out, "tiny")
    tokenizer = MuCodecTokenizer.from_checkpoint(out)

    assert torch.equal(
        tokenizer.encode_segments([golden_inputs["input_a"]])[0], golden_outputs["codes"][0]
    )
    assert (
        tokenizer.checkpoint_sha256 == summary["sha256"] == sha256_file(out / "model.safetensors")
    )
    assert (out / "model.safetensors.sha256").read_text().split()[0] == summary["sha256"]
    header = json.loads((out / "config.json").read_text())
    assert header["config"]["name"] == "tiny"
    assert header["sources"]["muq"]["sha256"] == sha256_file(official_files["muq"])
    # Only what layer_results[2] needs is kept: blocks 0 and 1.
    assert not any(k.startswith("encoder.blocks.2.") for k in load_file(out / "model.safetensors"))

    # The job refuses to write over it.
    argv = ["--mucodec", str(official_files["mucodec"]), "--output", str(out)]
    assert run_job(convert_main, argv) == 2


def test_converted_checkpoint_is_verified(official_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "converted"
    convert_official(_tokenizer_files(official_files), out, "tiny")
    header_path = out / "config.json"
    header = json.loads(header_path.read_text())

    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        MuCodecTokenizer.from_checkpoint(out)

    header["format_version"] = 99
    header_path.write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="format_version 99"):
        MuCodecTokenizer.from_checkpoint(out)
    with pytest.raises(CheckpointError, match="not a converted checkpoint"):
        MuCodecTokenizer.from_checkpoint(tmp_path)
