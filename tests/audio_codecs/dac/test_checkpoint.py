"""The three weight sources load strictly; the full-size releases fit our key map on meta."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from audio_codecs.base import CodecSpec
from audio_codecs.dac.checkpoint import (
    check_official_shapes,
    convert_official,
    load_converted,
    read_official,
)
from audio_codecs.dac.codec import load
from audio_codecs.dac.config import PRESETS, DacCodecConfig
from audio_codecs.dac.model import encode, preprocess
from core.errors import CheckpointError
from tests.audio_codecs.dac.conftest import GoldenSet

RELEASES = {"44khz_8kbps": 301, "24khz_8kbps": 462, "16khz_8kbps": 322}


def _manifest(dac_golden: Path, name: str) -> dict:
    return json.loads((dac_golden / f"manifest_dac_{name}.json").read_text())


def _shapes(manifest: dict) -> dict[str, tuple[int, ...]]:
    return {t["name"]: tuple(t["shape"]) for t in manifest["tensors"]}


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_every_release_key_and_shape_fits_on_meta(dac_golden: Path, release: str) -> None:
    manifest = _manifest(dac_golden, release)
    assert manifest["n_tensors"] == RELEASES[release] == len(manifest["tensors"])
    kwargs = manifest["metadata_kwargs_as_BaseModel_save_writes"]
    assert check_official_shapes(kwargs, _shapes(manifest)) == []
    # Our preset is that release, and derives the release's hop and delay.
    config = PRESETS[release]
    assert config == type(config).from_official_kwargs(kwargs)
    assert (config.hop, config.delay) == (
        manifest["derived"]["hop_length"],
        manifest["derived"]["delay"],
    )


def test_a_manifest_with_a_wrong_shape_or_extra_key_disagrees(dac_golden: Path) -> None:
    manifest = _manifest(dac_golden, "44khz_8kbps")
    shapes = _shapes(manifest)
    shapes["decoder.model.0.bias"] = (7,)
    shapes["encoder.block.1.block.0.block.1.bias_extra"] = (1,)
    problems = check_official_shapes(manifest["metadata_kwargs_as_BaseModel_save_writes"], shapes)
    assert any("wrong shapes" in p and "decoder.conv1.bias" in p for p in problems)
    assert any("unexpected keys" in p for p in problems)


def test_the_16kbps_release_is_refused_with_the_reason(dac_golden: Path) -> None:
    manifest = _manifest(dac_golden, "44khz_16kbps")
    kwargs = manifest["metadata_kwargs_as_BaseModel_save_writes"]
    with pytest.raises(CheckpointError, match=r"latent_dim 128.*cannot express"):
        check_official_shapes(kwargs, _shapes(manifest))


def _official_pth(golden_set: GoldenSet, path: Path, state: dict | None = None) -> Path:
    state = golden_set.official_state if state is None else state
    metadata = {"kwargs": {**golden_set.official_kwargs, "unknown_kwarg": 1}}
    torch.save({"state_dict": state, "metadata": metadata}, path)
    return path


@torch.no_grad()
def test_official_pth_converts_and_loads_to_the_golden_codes(
    golden_set: GoldenSet, tmp_path: Path
) -> None:
    pth = _official_pth(golden_set, tmp_path / "weights.pth")
    summary = convert_official(pth, tmp_path / "converted")
    assert summary["format"] == "dac-codec" and len(summary["sha256"]) == 64

    spec = CodecSpec("dac", checkpoint=str(tmp_path / "converted"))
    codec = load(spec, torch.device("cpu"))
    assert codec.info.weights_sha256 == summary["sha256"]
    assert codec.info.preset == ""
    x = preprocess(golden_set.inputs["mono_b"][None, None], golden_set.config.hop)
    assert torch.equal(encode(codec.model, x).codes, golden_set.outputs["mono_b.encode.codes"])


def test_official_pth_with_a_missing_or_extra_key_is_refused(
    golden_set: GoldenSet, tmp_path: Path
) -> None:
    state = dict(golden_set.official_state)
    del state["decoder.model.0.bias"]
    pth = _official_pth(golden_set, tmp_path / "missing.pth", state)
    with pytest.raises(CheckpointError, match=r"missing keys: \[decoder.conv1.bias\]"):
        convert_official(pth, tmp_path / "out")

    state = {**golden_set.official_state, "decoder.model.9.alpha": torch.ones(1, 4, 1)}
    pth = _official_pth(golden_set, tmp_path / "extra.pth", state)
    with pytest.raises(CheckpointError, match=r"decoder\.model\.9\.alpha"):
        read_official(pth)
    assert not (tmp_path / "out").exists()


def test_converted_weights_with_a_changed_hash_are_refused(
    golden_set: GoldenSet, tmp_path: Path
) -> None:
    convert_official(_official_pth(golden_set, tmp_path / "w.pth"), tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    state = load_file(weights)
    state["decoder.conv1.bias"] = state["decoder.conv1.bias"] + 1
    save_file(state, weights)
    with pytest.raises(CheckpointError, match="sha256"):
        load_converted(tmp_path / "c")


@torch.no_grad()
def test_a_local_hugging_face_directory_loads_strictly(
    golden_set: GoldenSet, tmp_path: Path
) -> None:
    golden_set.model.save_pretrained(tmp_path / "hf")
    loaded = load_converted(tmp_path / "hf")
    assert loaded.config == golden_set.config and len(loaded.sha256) == 64
    for key, value in golden_set.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key

    state = load_file(tmp_path / "hf" / "model.safetensors")
    state["encoder.extra.weight"] = torch.zeros(1)
    save_file(state, tmp_path / "hf" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected keys: \[encoder.extra.weight\]"):
        load_converted(tmp_path / "hf")


def test_a_directory_of_neither_kind_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="neither our converted"):
        load_converted(tmp_path)


def test_kwargs_dac_config_cannot_express_are_refused() -> None:
    with pytest.raises(CheckpointError, match="reversed"):
        DacCodecConfig.from_official_kwargs({"decoder_rates": [8, 4, 8, 2]})
    with pytest.raises(CheckpointError, match="one int"):
        DacCodecConfig.from_official_kwargs({"codebook_dim": [8] * 9})
    with pytest.raises(CheckpointError, match="not plain data"):
        DacCodecConfig.from_official_kwargs({"sample_rate": "44100"})


def test_loading_the_16kbps_release_file_is_refused(dac_golden: Path, tmp_path: Path) -> None:
    kwargs = _manifest(dac_golden, "44khz_16kbps")["metadata_kwargs_as_BaseModel_save_writes"]
    path = tmp_path / "weights_44khz_16kbps.pth"
    torch.save({"state_dict": {}, "metadata": {"kwargs": kwargs}}, path)
    with pytest.raises(CheckpointError, match=r"weights_44khz_16kbps\.pth.*latent_dim 128"):
        convert_official(path, tmp_path / "out")
