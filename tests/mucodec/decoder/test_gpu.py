"""Decoder on CUDA: float32 parity, and the fp16 / bf16 paths against float32.

Skipped without a GPU. Tolerances are GPU-sized: cuDNN convolutions may use TF32, and the
reduced-precision paths are compared with fp16-sized bounds (golden README, last note).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core.key_map import load_strict, map_state
from mucodec.decoder.builders import build_decoder
from mucodec.decoder.checkpoint import MAIN_KEY_MAP, VAE_KEY_MAP
from mucodec.decoder.config import decoder_preset
from mucodec.decoder.model import MuCodecDecoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def decoder(decoder_golden: Path) -> MuCodecDecoder:
    model = build_decoder(decoder_preset("tiny"), seed=0)
    state = {
        **map_state(load_file(decoder_golden / "main_tiny.safetensors"), MAIN_KEY_MAP),
        **map_state(load_file(decoder_golden / "vae_tiny.safetensors"), VAE_KEY_MAP),
    }
    load_strict(model, state)
    return model.to("cuda")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.float().cpu() - expected).norm() / expected.norm())


def test_float32_window_matches_golden(decoder: MuCodecDecoder, decoder_golden: Path) -> None:
    g = load_file(decoder_golden / "inference_codes_vectors.safetensors")
    latents = decoder.flow.sample(g["ic.codes_start"].cuda(), g["noise_a"].cuda(), num_steps=3)
    torch.testing.assert_close(latents.cpu(), g["ic.latents_start"], atol=2e-3, rtol=0)


@pytest.mark.parametrize("autocast", [torch.float16, torch.bfloat16])
def test_reduced_precision_window_stays_close(
    decoder: MuCodecDecoder, decoder_golden: Path, autocast: torch.dtype
) -> None:
    g = load_file(decoder_golden / "inference_codes_vectors.safetensors")
    latents = decoder.flow.sample(
        g["ic.codes_start"].cuda(),
        g["noise_a"].cuda(),
        num_steps=3,
        autocast_dtype=autocast,
        float32_guidance=autocast is torch.bfloat16,
    )
    assert latents.dtype == torch.float32
    assert relative_error(latents, g["ic.latents_start"]) < 3e-2


@pytest.mark.parametrize("mode", ["official_way", "bfloat16", "float16"])
def test_decode_modes_agree_with_float32(decoder: MuCodecDecoder, mode: str) -> None:
    codes = torch.randint(0, 256, (2, 1, 200), generator=torch.Generator().manual_seed(0))
    reference = decoder.decode(codes, seeds=[1, 2], sampling=decoder.with_sampling(num_steps=2))
    if mode == "official_way":
        sampling = decoder.with_sampling(num_steps=2, official_way=True)
        audio = decoder.decode(codes, seeds=[1, 2], sampling=sampling)
    else:
        sampling = decoder.with_sampling(num_steps=2)
        low = MuCodecDecoder(
            config=decoder.config,
            flow=decoder.flow,
            vae=decoder.vae,
            vocoder=decoder.vocoder,
            precision=mode,
        )
        audio = low.decode(codes, seeds=[1, 2], sampling=sampling)
    assert audio.shape == reference.shape == (2, 2, 200 * 1920)
    assert torch.isfinite(audio).all()
    assert relative_error(audio, reference.cpu()) < 0.1
