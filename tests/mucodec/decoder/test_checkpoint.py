"""Decoder checkpoints: strict manifests of the full-size models, refusals, conversion."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.errors import CheckpointError
from core.key_map import load_strict, map_state
from mucodec.decoder.builders import build_decoder
from mucodec.decoder.checkpoint import (
    MAIN_KEY_MAP,
    VAE_KEY_MAP,
    check_manifest,
    convert_official,
    load_converted,
    load_decoder,
    load_official_decoder,
    save_decoder_checkpoint,
)
from mucodec.decoder.config import DECODER_PRESETS, DecoderConfig, decoder_preset
from mucodec.decoder.model import MuCodecDecoder


@pytest.fixture(scope="module")
def full_size() -> MuCodecDecoder:
    """The official-size decoder on the meta device (shapes only, no memory)."""
    return build_decoder(decoder_preset("official"), device="meta")


def _numel(module: torch.nn.Module, prefix: str) -> int:
    return sum(v.numel() for k, v in module.state_dict().items() if k.startswith(prefix))


def test_full_size_main_model_matches_manifest(
    full_size: MuCodecDecoder, decoder_golden: Path
) -> None:
    manifest = json.loads((decoder_golden / "manifest_mucodec_decoder_fullsize.json").read_text())
    assert check_manifest(full_size, manifest, "main") == len(manifest["tensors"]) == 338
    counts = manifest["counts"]
    assert _numel(full_size, "flow.estimator.") == counts["estimator_parameters"]
    assert _numel(full_size, "flow.") == counts["decoder_total_elements"]


def test_full_size_vae_and_vocoder_match_manifest(
    full_size: MuCodecDecoder, decoder_golden: Path
) -> None:
    manifest = json.loads((decoder_golden / "manifest_audioldm_48k_fullsize.json").read_text())
    # 507 entries minus the VAE encoder (108) and quant_conv (2), not needed to decode.
    assert check_manifest(full_size, manifest, "vae") == 397
    counts = manifest["counts"]
    assert _numel(full_size, "vocoder.") == counts["vocoder"] == 190_281_889
    assert _numel(full_size, "vae.decoder.") == counts["decoder"]
    assert _numel(full_size, "vae.post_quant_conv.") == counts["post_quant_conv"]


def test_manifest_check_refuses_a_wrong_shape(
    full_size: MuCodecDecoder, decoder_golden: Path
) -> None:
    manifest = json.loads((decoder_golden / "manifest_mucodec_decoder_fullsize.json").read_text())
    wrong = build_decoder(
        DecoderConfig(flow=decoder_preset("tiny").flow, vae=decoder_preset("official").vae),
        device="meta",
    )
    with pytest.raises(CheckpointError, match="wrong shapes"):
        check_manifest(wrong, manifest, "main")
    manifest["tensors"] = manifest["tensors"][1:]  # drop zero_cond_embedding1
    with pytest.raises(CheckpointError, match=re.escape("flow.conditioner.null_cond")):
        check_manifest(full_size, manifest, "main")


@pytest.fixture(scope="module")
def tiny_state(decoder_golden: Path) -> dict[str, torch.Tensor]:
    return {
        **map_state(load_file(decoder_golden / "main_tiny.safetensors"), MAIN_KEY_MAP),
        **map_state(load_file(decoder_golden / "vae_tiny.safetensors"), VAE_KEY_MAP),
    }


def test_load_strict_refuses_missing_unexpected_and_misshaped(
    tiny_state: dict[str, torch.Tensor],
) -> None:
    model = build_decoder(decoder_preset("tiny"), device="meta")
    missing = dict(tiny_state)
    del missing["vae.scale_factor"]
    with pytest.raises(CheckpointError, match=r"missing keys: \[vae.scale_factor\]"):
        load_strict(model, missing)
    with pytest.raises(CheckpointError, match=r"unexpected keys: .*flow\.extra"):
        load_strict(model, {**tiny_state, "flow.extra": torch.zeros(1)})
    bad = {**tiny_state, "flow.conditioner.proj.bias": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"flow.conditioner.proj.bias: checkpoint"):
        load_strict(model, bad)


def test_key_map_names_unknown_official_keys() -> None:
    with pytest.raises(CheckpointError, match=re.escape("cfm_wrapper.estimator.mystery")):
        map_state({"cfm_wrapper.estimator.mystery.weight": 0}, MAIN_KEY_MAP)
    renamed = map_state(
        {
            "cfm_wrapper.estimator.transformer_blocks.11.attn1.to_out.0.weight": 1,
            "cfm_wrapper.estimator.transformer_blocks.3.ff.net.0.proj.bias": 2,
            "muencoder.model.conformer.layers.0.x": 3,
            "rsq48towav2vec.kernel": 4,
        },
        MAIN_KEY_MAP,
    )
    assert renamed == {
        "flow.estimator.blocks.11.attn.to_out.weight": 1,
        "flow.estimator.blocks.3.mlp.fc1.bias": 2,
    }


def _write_official_pickles(decoder_golden: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Tiny stand-ins for `mucodec.pt` and `audioldm_48k.pth` with their extra content."""
    main = dict(load_file(decoder_golden / "main_tiny.safetensors"))
    main["muencoder.model.conformer.pos.weight"] = torch.ones(2)  # encoder side: dropped
    main["rsq48tomuencoder.kernel"] = torch.ones(1, 1, 28)
    main_path = tmp_path / "mucodec.pt"
    torch.save(main, main_path)
    vae = dict(load_file(decoder_golden / "vae_tiny.safetensors"))
    vae["model.diffusion_model.out.weight"] = torch.ones(3)  # AudioLDM's UNet: ignored
    # A Lightning-style checkpoint: non-tensor objects that weights-only loading refuses.
    lightning = {"state_dict": vae, "epoch": 7, "hparams": argparse.Namespace(lr=1e-4)}
    vae_path = tmp_path / "audioldm_48k.pth"
    torch.save(lightning, vae_path)
    return main_path, vae_path


def test_convert_official_round_trip(
    decoder_golden: Path, tmp_path: Path, tiny_state: dict[str, torch.Tensor]
) -> None:
    main_path, vae_path = _write_official_pickles(decoder_golden, tmp_path)
    out = tmp_path / "decoder_tiny"
    digest = convert_official(main_path, vae_path, out, decoder_preset("tiny"))
    header = json.loads((out / "config.json").read_text())
    assert header["sha256"] == digest and header["format"] == "mucodec-decoder"
    assert set(header["sources"]) == {"mucodec.pt", "audioldm_48k.pth"}

    config, state = load_converted(out)
    assert config == decoder_preset("tiny")
    assert state.keys() == tiny_state.keys()
    for key, value in tiny_state.items():
        assert torch.equal(state[key], value), key

    loaded = load_decoder(out)
    official = load_official_decoder(
        main_path, vae_path, config=decoder_preset("tiny"), precision="bfloat16"
    )
    assert (loaded.precision, official.precision) == ("float32", "bfloat16")
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, tiny_state[key]), key
        assert torch.equal(official.state_dict()[key], value), key


def test_official_file_with_a_missing_key_is_refused(decoder_golden: Path, tmp_path: Path) -> None:
    main = dict(load_file(decoder_golden / "main_tiny.safetensors"))
    del main["cfm_wrapper.estimator.proj_out.bias"]
    main_path = tmp_path / "mucodec.safetensors"
    save_file(main, str(main_path))
    with pytest.raises(CheckpointError, match=re.escape("flow.estimator.proj_out.bias")):
        load_official_decoder(
            main_path, decoder_golden / "vae_tiny.safetensors", config=decoder_preset("tiny")
        )


def test_our_format_refuses_foreign_tampered_and_unknown_versions(
    tmp_path: Path, tiny_state: dict[str, torch.Tensor]
) -> None:
    with pytest.raises(CheckpointError, match="not a converted checkpoint"):
        load_converted(tmp_path)
    ours = tmp_path / "ours"
    save_decoder_checkpoint(ours, decoder_preset("tiny"), tiny_state, {"a.pt": "00"})
    assert load_converted(ours)[0] == decoder_preset("tiny")

    header_path = ours / "config.json"
    header = json.loads(header_path.read_text())
    header_path.write_text(json.dumps({**header, "format": "mucodec-encoder"}))
    with pytest.raises(CheckpointError, match="is not 'mucodec-decoder'"):
        load_converted(ours)
    header_path.write_text(json.dumps({**header, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99 is not supported"):
        load_converted(ours)
    header_path.write_text(json.dumps(header))
    tampered = {**tiny_state, "vae.scale_factor": torch.tensor(0.5)}
    save_file(tampered, str(ours / "model.safetensors"))
    with pytest.raises(CheckpointError, match="sha256 differs"):
        load_converted(ours)


@pytest.mark.parametrize("name", sorted(DECODER_PRESETS))
def test_config_json_round_trip(name: str) -> None:
    config = decoder_preset(name)
    assert DecoderConfig.from_json(config.to_json()) == config


def test_unfrozen_normaliser_statistics_warn(tiny_state: dict[str, torch.Tensor]) -> None:
    model = build_decoder(decoder_preset("tiny"), seed=0)
    load_strict(model, {**tiny_state, "flow.normalizer.counts": torch.tensor([50.0])})
    with pytest.warns(UserWarning, match="keep them fixed"):
        assert not model.flow.normalizer.check_frozen()
