"""Decoder parity with the official MuCodec code: every vector of `golden/decoder/`.

Tolerances are the "suggested atol" column of the golden README (CPU, float32).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from core.key_map import load_strict, map_state
from mucodec.decoder.builders import build_decoder
from mucodec.decoder.checkpoint import MAIN_KEY_MAP, VAE_KEY_MAP
from mucodec.decoder.config import decoder_preset
from mucodec.decoder.model import MuCodecDecoder, plan_windows, tile_codes
from mucodec.decoder.vocoder import vocode_chunked

pytestmark = pytest.mark.golden


def close(actual: Tensor, expected: Tensor, atol: float) -> None:
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def decoder(decoder_golden: Path) -> MuCodecDecoder:
    """The tiny decoder with the golden weights, loaded through the official key maps."""
    model = build_decoder(decoder_preset("tiny"), seed=0)
    state = {
        **map_state(load_file(decoder_golden / "main_tiny.safetensors"), MAIN_KEY_MAP),
        **map_state(load_file(decoder_golden / "vae_tiny.safetensors"), VAE_KEY_MAP),
    }
    load_strict(model, state)
    return model


@pytest.fixture(scope="module")
def ic_vectors(decoder_golden: Path) -> dict[str, Tensor]:
    return load_file(decoder_golden / "inference_codes_vectors.safetensors")


class EstimatorRecorder:
    """Wraps the estimator's forward to record every call's input, timesteps and output."""

    def __init__(self, model: MuCodecDecoder, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[Tensor, Tensor, Tensor]] = []
        estimator = model.flow.estimator
        forward: Callable[[Tensor, Tensor], Tensor] = estimator.forward

        def recording(h: Tensor, t: Tensor) -> Tensor:
            out = forward(h, t)
            self.calls.append((h.clone(), t.clone(), out.clone()))
            return out

        monkeypatch.setattr(estimator, "forward", recording)

    def timesteps(self) -> Tensor:
        """The (single) timestep of each call; every row of a call must share it."""
        for _, t, _ in self.calls:
            assert torch.equal(t, t[:1].expand_as(t))
        return torch.stack([t[0] for _, t, _ in self.calls])


def test_cond_path_and_short_inference(
    decoder: MuCodecDecoder, decoder_golden: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = load_file(decoder_golden / "cond_mini_vectors.safetensors")
    flow = decoder.flow
    rvq = flow.conditioner.rvq
    codes = g["mini.codes"]

    close(rvq.from_codes(codes), g["mini.rvq_zq"], 1e-5)
    assert torch.equal(rvq.quantizers[0].embed(codes[:, 0]), g["mini.rvq_zp"])
    linear = flow.conditioner.proj(rvq.from_codes(codes).transpose(1, 2))
    close(linear, g["mini.cond_linear_out"], 1e-5)
    mean, std = flow.normalizer.statistics()
    close(mean, g["mini.normfeat_mean"], 1e-6)
    close(std, g["mini.normfeat_std"], 1e-6)
    projected = flow.normalizer.project(g["mini.true_latents"])
    close(projected, g["mini.projected_true_latents"], 2e-5)

    recorder = EstimatorRecorder(decoder, monkeypatch)
    latents = flow.sample(
        codes,
        g["mini.noise"],
        num_steps=2,
        guidance_scale=1.5,
        incontext=g["mini.true_latents"],
        incontext_frames=4,
        latent_length=12,
    )
    close(latents, g["mini.latents"], 1e-4)

    first, second = recorder.calls
    h1 = first[0]
    assert h1.shape == (2, 96, 16, 32)
    assert torch.equal(h1[0, :64], h1[1, :64])  # x and in-context shared by both rows
    assert torch.equal(h1[:, :32], g["mini.noise"].expand(2, -1, -1, -1))
    assert torch.count_nonzero(h1[0, 64:]) == 0  # unconditional row: all-zero cond
    close(h1[1:, 64:], g["mini.est1_mu"], 1e-5)  # frames 12..15 = zero_cond_embedding1
    close(h1[:1, 32:64], g["mini.est1_incontext"], 2e-5)
    close(first[2], g["mini.est1_output"], 2e-5)
    close(second[0][:1, :32], g["mini.est2_x"], 2e-5)  # the one check of sigma_min
    assert torch.equal(recorder.timesteps(), g["mini.timesteps_seen"])


@pytest.mark.parametrize("case", ["short", "full"])
def test_estimator_forward(
    decoder: MuCodecDecoder, decoder_golden: Path, ic_vectors: dict[str, Tensor], case: str
) -> None:
    g = load_file(decoder_golden / "dit_vectors.safetensors")
    if case == "short":
        h, t = g["dit_short.hidden_states"], torch.tensor([0.3, 0.85])
    else:
        parts = [ic_vectors["noise_a"], ic_vectors["noise_b"], ic_vectors["ic.latents_start"]]
        h, t = torch.cat(parts, dim=1), torch.tensor([0.5])
    with torch.no_grad():
        out = decoder.flow.estimator(h, t)
    close(out, g[f"dit_{case}.output"], 2e-5)


def test_inference_codes_windows(
    decoder: MuCodecDecoder, ic_vectors: dict[str, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    g = ic_vectors
    recorder = EstimatorRecorder(decoder, monkeypatch)
    start = decoder.flow.sample(g["ic.codes_start"], g["noise_a"], num_steps=3)
    close(start, g["ic.latents_start"], 1e-4)
    assert torch.equal(recorder.timesteps(), g["ic.timesteps_seen_start"])

    recorder.calls.clear()
    other = decoder.flow.sample(
        g["ic.codes_other"],
        g["noise_b"],
        num_steps=3,
        incontext=g["ic.latents_start"][:, :, -128:],
        incontext_frames=128,
    )
    close(other, g["ic.latents_other"], 1e-4)
    assert torch.equal(recorder.timesteps(), g["ic.timesteps_seen_other"])


def test_vae_and_vocoder(decoder: MuCodecDecoder, decoder_golden: Path) -> None:
    g = load_file(decoder_golden / "vae_vectors.safetensors")
    with torch.no_grad():
        mel = decoder.vae(g["vae.latent"])
        close(mel, g["vae.mel"], 1e-4)
        spectrogram = g["vae.mel"].squeeze(1).transpose(1, 2)  # [2, 256, 1040]
        for reuse in (False, True):
            wave = vocode_chunked(decoder.vocoder, spectrogram, reuse_interior=reuse)
            close(wave, g["vae.waveform"], 1e-4)


def test_code2sound_two_windows(
    decoder: MuCodecDecoder,
    decoder_golden: Path,
    ic_vectors: dict[str, Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`MuCodec.code2sound` on 1037 codes (2 windows, 2 steps) with the recorded noise."""
    g = load_file(decoder_golden / "code2sound_vectors.safetensors")
    codes = g["c2s.codes"]
    n_codes = codes.shape[-1]

    plan = plan_windows(n_codes, decoder.config.window)
    tiled = tile_codes(codes, plan.padded_codes)[0, 0]
    windows = torch.stack([tiled[s : s + 1024] for s in plan.starts])
    assert torch.equal(windows, g["c2s.window_codes"])

    window_calls: list[tuple[int, Tensor]] = []
    sample = decoder.flow.sample

    def recording_sample(*args: object, **kwargs: object) -> Tensor:
        latents = sample(*args, **kwargs)  # type: ignore[arg-type]
        window_calls.append((int(kwargs["incontext_frames"]), latents.clone()))  # type: ignore[call-overload]
        return latents

    monkeypatch.setattr(decoder.flow, "sample", recording_sample)
    recorder = EstimatorRecorder(decoder, monkeypatch)
    noise = [ic_vectors["noise_a"], ic_vectors["noise_b"]]
    wave = decoder.decode(codes, noise=noise, sampling=decoder.with_sampling(num_steps=2))

    assert torch.equal(torch.tensor([n for n, _ in window_calls]), g["c2s.window_incontext_length"])
    close(torch.cat([lat for _, lat in window_calls]), g["c2s.window_latents"], 1e-4)
    assert torch.equal(recorder.timesteps(), g["c2s.timesteps_seen"])

    # Length: ours is exactly 1920 N; the reference's float truncation gives one sample
    # less for N = 1037 (docs/decoder.md). Everything the reference returns must match.
    reference_length = int(g["c2s.wave_length"])
    assert reference_length == int(n_codes / 100 * 4 * 48000) == 1920 * n_codes - 1
    assert wave.shape == (1, 2, 1920 * n_codes)
    audio = wave[0, :, :reference_length]
    close(audio[:, ::17], g["c2s.wave_stride17"], 5e-4)
    excerpts = [audio[:, s : s + 9600] for s in g["c2s.wave_excerpt_starts"].tolist()]
    close(torch.cat(excerpts, dim=1), g["c2s.wave_excerpts"], 5e-4)
    blocks = g["c2s.wave_block_rms480"].shape[1]
    rms = audio[:, : blocks * 480].double().reshape(2, blocks, 480).pow(2).mean(-1).sqrt()
    close(rms.float(), g["c2s.wave_block_rms480"], 1e-4)
