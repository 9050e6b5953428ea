"""EnCodec weights: official `.th` (zip and legacy), converted and Hugging Face directories,
the full-size manifests, and files that try to run code."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from audio_codecs.base import CodecSpec
from audio_codecs.encodec.checkpoint import (
    convert_official,
    load_converted,
    load_official,
    manifest_problems,
)
from audio_codecs.encodec.codec import load
from audio_codecs.encodec.coding import encode_frames
from core.checkpoint_dir import sha256_file
from core.errors import CheckpointError

CPU = torch.device("cpu")


def _official_state(encodec_golden: Path, name: str) -> OrderedDict:
    return OrderedDict(load_file(encodec_golden / f"encodec_tiny_{name}_state_dict.safetensors"))


def _th(tmp_path: Path, state: dict, legacy: bool = False) -> Path:
    path = tmp_path / ("legacy.th" if legacy else "model.th")
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def _golden_codes(encodec_golden: Path, model, config) -> bool:
    """Whether `model` gives the golden codes of the 48 kHz case stereo_b at 3.6 kbps."""
    inputs = load_file(encodec_golden / "encodec_tiny_48k_inputs.safetensors")
    outputs = load_file(encodec_golden / "encodec_tiny_48k_outputs.safetensors")
    frames = encode_frames(model, config, inputs["stereo_b"][None], 4)
    return all(
        torch.equal(f.codes, outputs[f"stereo_b.bw3.6.frame{i}.codes"])
        for i, f in enumerate(frames)
    )


@pytest.mark.parametrize("name", ["24khz", "48khz"])
def test_full_size_manifests_match_our_models_on_meta(encodec_golden: Path, name: str) -> None:
    manifest = json.loads((encodec_golden / f"manifest_encodec_{name}.json").read_text())
    assert len(manifest["tensors"]) == manifest["n_tensors"]
    assert manifest_problems(manifest, name) == []

    manifest["tensors"][0]["shape"][0] += 1  # One wrong shape is named.
    del manifest["tensors"][-1]
    problems = " ".join(manifest_problems(manifest, name))
    assert "wrong shapes" in problems and "missing keys" in problems


@pytest.mark.parametrize("legacy", [False, True])
def test_official_th_loads_strictly_in_either_torch_format(
    encodec_golden: Path, tmp_path: Path, legacy: bool
) -> None:
    path = _th(tmp_path, _official_state(encodec_golden, "48k"), legacy)
    loaded = load_official(path, "tiny_48k")
    assert loaded.sha256 == sha256_file(path)
    assert _golden_codes(encodec_golden, loaded.model, loaded.config)


def test_official_th_with_wrong_keys_is_refused(encodec_golden: Path, tmp_path: Path) -> None:
    state = _official_state(encodec_golden, "48k")
    state.popitem()
    with pytest.raises(CheckpointError, match="missing keys"):
        load_official(_th(tmp_path, state), "tiny_48k")
    state["encoder.model.99.mystery.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"mystery"):
        load_official(_th(tmp_path, state), "tiny_48k")
    with pytest.raises(CheckpointError, match="wrong shapes"):
        load_official(_th(tmp_path, _official_state(encodec_golden, "24k")), "tiny_48k")


class _Exploit:
    """Pickles to a call that creates a file, as a hostile checkpoint would."""

    def __init__(self, marker: Path, via_shell: bool) -> None:
        self.marker = marker
        self.via_shell = via_shell

    def __reduce__(self):
        if self.via_shell:
            return (os.system, (f"touch {self.marker}",))
        return (Path.touch, (self.marker,))  # Pickled as getattr(PosixPath, "touch")(marker).


@pytest.mark.parametrize("via_shell", [True, False])
@pytest.mark.parametrize("legacy", [False, True])
def test_a_th_that_names_code_is_refused_without_running_it(
    encodec_golden: Path, tmp_path: Path, legacy: bool, via_shell: bool
) -> None:
    marker = tmp_path / "pwned"
    state = _official_state(encodec_golden, "48k")
    state["payload"] = _Exploit(marker, via_shell)
    path = _th(tmp_path, state, legacy)
    with pytest.raises(CheckpointError, match=r"not a state dict|refused"):
        load_official(path, "tiny_48k")
    assert not marker.exists()


def test_converted_directory_round_trip(encodec_golden: Path, tmp_path: Path) -> None:
    th = _th(tmp_path, _official_state(encodec_golden, "48k"))
    summary = convert_official(th, tmp_path / "converted", "tiny_48k")
    assert summary["sha256"] == sha256_file(tmp_path / "converted" / "model.safetensors")
    assert summary["source_sha256"] == sha256_file(th)
    assert summary["tensors"] == 176

    codec = load(CodecSpec("encodec", checkpoint=str(tmp_path / "converted")), CPU)
    assert codec.info.weights_sha256 == summary["sha256"]
    assert codec.info.preset == "" and codec.num_codebooks == 4
    assert _golden_codes(encodec_golden, codec.model, codec.config)

    weights = tmp_path / "converted" / "model.safetensors"
    tensors = load_file(weights)
    next(iter(tensors.values())).add_(1.0)
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match="sha256"):
        load_converted(tmp_path / "converted")


def test_hugging_face_directory_loads_without_network(
    encodec_golden: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = load_official(_th(tmp_path, _official_state(encodec_golden, "24k")), "tiny_24k")
    loaded.model.save_pretrained(tmp_path / "hf")
    # Older Hugging Face files name weight norm's tensors weight_g / weight_v.
    legacy = {
        k.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v"
        ): v
        for k, v in load_file(tmp_path / "hf" / "model.safetensors").items()
    }
    save_file(legacy, tmp_path / "hf" / "model.safetensors")

    again = load_converted(tmp_path / "hf")
    assert again.config == loaded.config
    assert again.sha256 == sha256_file(tmp_path / "hf" / "model.safetensors")
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key], value), key


def test_a_directory_of_neither_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "dac"}')
    with pytest.raises(CheckpointError, match="neither"):
        load_converted(tmp_path)
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        load_converted(tmp_path / "absent")
