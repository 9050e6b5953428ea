"""Decoder invariants on a micro model: windowing, batching, seeds, solver, chunking."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor

from mucodec.decoder.builders import build_decoder
from mucodec.decoder.config import (
    DecoderConfig,
    MelVAEConfig,
    SamplingConfig,
    VocoderConfig,
    WindowConfig,
    decoder_preset,
)
from mucodec.decoder.flow import GuidedVelocity
from mucodec.decoder.model import MuCodecDecoder, plan_windows, tile_codes
from mucodec.decoder.sampling import euler_sample, seeded_noise
from mucodec.decoder.vocoder import HiFiGAN, boundary_margin, vocode_chunked


def micro_config() -> DecoderConfig:
    """A decoder of the real structure, ~1000x cheaper than the tiny golden one.

    4 latent bins (32 mel bins), 64-code windows overlapping by 16 codes (8 in-context
    frames), an 8-wide VAE and a 32x vocoder at 3200 Hz whose 64-frame chunks with hop 16
    give the same 13 chunks per window and 3/4 overlaps as the real one.
    """
    tiny = decoder_preset("tiny")
    return dataclasses.replace(
        tiny,
        name="micro",
        flow=dataclasses.replace(
            tiny.flow,
            latent_freq=4,
            conditioner=dataclasses.replace(tiny.flow.conditioner, cond_dim=64),
        ),
        vae=MelVAEConfig(ch=8, ch_mult=(1, 1, 1, 2), num_res_blocks=1, mel_bins=32, num_groups=4),
        vocoder=VocoderConfig(
            num_mels=32,
            upsample_rates=(4, 2, 2, 2),
            upsample_kernel_sizes=(8, 4, 4, 4),
            upsample_initial_channel=16,
            resblock_kernel_sizes=(3, 3),
            resblock_dilations=(1, 2),
            sample_rate=3200,
            hop_length=32,
            chunk_frames=64,
            chunk_hop=16,
        ),
        window=WindowConfig(window_codes=64, hop_codes=48),
        sampling=SamplingConfig(num_steps=2),
    )


def redraw(module: torch.nn.Module, seed: int) -> None:
    """He-scaled random weights and non-trivial norms, so that random audio is not flat.

    PyTorch's default init shrinks activations layer by layer, which leaves a random
    VAE + vocoder emitting a near-constant waveform that would hide row mix-ups.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, (2.0 / p[0].numel()) ** 0.5, generator=generator)
            elif "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5, generator=generator)
            else:
                p.normal_(0, 0.1, generator=generator)


@pytest.fixture(scope="module")
def micro() -> MuCodecDecoder:
    model = build_decoder(micro_config(), seed=3)
    redraw(model.vae, 1)
    redraw(model.vocoder, 2)
    return model


def random_codes(batch: int, n_codes: int, seed: int, size: int = 256) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, size, (batch, 1, n_codes), generator=generator)


# --- windowing --------------------------------------------------------------------------


def reference_padded_length(n_codes: int) -> int:
    """`code2sound`'s tiling, transcribed with its 128-vs-256 slip (spec section 8)."""
    length = max(n_codes, 1024)  # shorter sequences are doubled, then cut to 1024
    if (length - 128) % 768 > 0:
        length = math.ceil((length - 256) / 768) * 768 + 256
    return length


def test_window_plan_matches_the_reference_where_it_works() -> None:
    window = WindowConfig()
    crashes = 0
    for n_codes in range(1, 5000):
        plan = plan_windows(n_codes, window)
        reference = reference_padded_length(n_codes)
        if (reference - 256) % 768:  # the reference's last window is short: it crashes
            crashes += 1
            assert (reference - 128) % 768 == 0 and reference > 1024
            assert plan.padded_codes == reference + 128  # one whole window more
        else:
            assert plan.padded_codes == reference
        assert plan.starts == tuple(range(0, plan.padded_codes - 768, 768))
        assert plan.starts[-1] + 1024 == plan.padded_codes
    assert crashes == 5  # N' = 1664, 2432, 3200, 3968, 4736
    assert plan_windows(1037, window).padded_codes == 1792
    assert plan_windows(896, window).padded_codes == 1024
    assert plan_windows(896, window).starts == (0,)


def test_tiling_is_the_references_doubling() -> None:
    codes = torch.arange(1037)[None, None]
    doubled = codes
    while doubled.shape[-1] < 1792:
        doubled = torch.cat([doubled, doubled], dim=-1)
    assert torch.equal(tile_codes(codes, 1792), doubled[..., :1792])
    short = torch.arange(300)[None, None]
    assert torch.equal(tile_codes(short, 1024), torch.cat([short] * 4, dim=-1)[..., :1024])


def test_exact_output_length_where_the_reference_truncates() -> None:
    """The reference's `int(N / 100 * 4 * 48000)` is one short for 42 N in (1024, 1792]."""
    short = [n for n in range(1025, 1793) if int(n / 100 * 4 * 48000) != 1920 * n]
    assert len(short) == 42 and 1037 in short
    assert all(int(n / 100 * 4 * 48000) == 1920 * n - 1 for n in short)


# --- decoding ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(micro: MuCodecDecoder) -> tuple[Tensor, list[int], Tensor]:
    """Three items of 100 codes (2 windows) decoded together: codes, seeds, audio."""
    codes, seeds = random_codes(3, 100, seed=1), [11, 12, 13]
    return codes, seeds, micro.decode(codes, seeds=seeds)


def test_decode_shape_and_range(batch: tuple[Tensor, list[int], Tensor]) -> None:
    _, _, audio = batch
    assert audio.shape == (3, 2, 100 * 128) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1
    assert audio.std(dim=-1).min() > 0.05  # not flat
    assert (audio[0] - audio[1]).abs().max() > 0.1


def test_batched_decode_equals_one_by_one(
    micro: MuCodecDecoder, batch: tuple[Tensor, list[int], Tensor]
) -> None:
    """Noise depends on the item's seed only, and rows do not interact."""
    codes, seeds, audio = batch
    for b in range(3):
        single = micro.decode(codes[b : b + 1], seeds=seeds[b])
        torch.testing.assert_close(audio[b : b + 1], single, atol=1e-4, rtol=0)
    other_seed = micro.decode(codes[:1], seeds=seeds[0] + 1)
    assert (other_seed - audio[:1]).abs().max() > 0.1


def test_official_way_on_cpu_matches_the_default_path(
    micro: MuCodecDecoder, batch: tuple[Tensor, list[int], Tensor]
) -> None:
    """On CPU the reference's autocast is inactive: per-item, direct chunks, float32."""
    codes, seeds, audio = batch
    sampling = micro.with_sampling(official_way=True)
    official = micro.decode(codes[:2], seeds=seeds[:2], sampling=sampling)
    torch.testing.assert_close(official, audio[:2], atol=1e-4, rtol=0)


def test_whole_window_vocoding_differs_only_near_chunk_seams(micro: MuCodecDecoder) -> None:
    codes = random_codes(1, 64, seed=4)
    chunked = micro.decode(codes, seeds=0)
    whole = micro.decode(codes, seeds=0, sampling=micro.with_sampling(vocoder_chunks=False))
    difference = (chunked - whole).abs()
    assert difference.max() < 0.5 * chunked.abs().max()
    assert difference.mean() < 0.05 * chunked.abs().mean()


def test_bfloat16_autocast_decodes_close_to_float32(micro: MuCodecDecoder) -> None:
    codes = random_codes(1, 64, seed=5)
    reference = micro.decode(codes, seeds=0)
    low = MuCodecDecoder(
        config=micro.config,
        flow=micro.flow,
        vae=micro.vae,
        vocoder=micro.vocoder,
        precision="bfloat16",
    ).decode(codes, seeds=0)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    relative = (low - reference).norm() / reference.norm()
    assert relative < 0.1


def test_decode_refuses_bad_inputs(micro: MuCodecDecoder) -> None:
    with pytest.raises(ValueError, match=r"\[B, n, N\]"):
        micro.decode(torch.zeros(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="2 seeds for a batch of 3"):
        micro.decode(torch.zeros(3, 1, 10, dtype=torch.long), seeds=[1, 2])
    with pytest.raises(ValueError, match="1 windows need as many noise tensors"):
        micro.decode(torch.zeros(1, 1, 10, dtype=torch.long), noise=[])
    with pytest.raises(ValueError, match="empty"):
        micro.decode(torch.zeros(1, 1, 0, dtype=torch.long))


def test_seeded_noise_is_per_seed_and_device_independent() -> None:
    a = seeded_noise((2, 3), 7)
    assert torch.equal(a, seeded_noise((2, 3), 7))
    assert not torch.equal(a, seeded_noise((2, 3), 8))


# --- vocoder chunking -------------------------------------------------------------------


@pytest.mark.parametrize("frames", [256, 300, 70])
def test_chunks_from_one_pass_equal_direct_chunks(frames: int) -> None:
    config = micro_config().vocoder
    torch.manual_seed(0)
    vocoder = HiFiGAN(config).eval()
    redraw(vocoder, 0)
    mel = torch.randn(2, config.num_mels, frames)
    assert 4 * boundary_margin(config) <= config.chunk_frames
    with torch.no_grad():
        direct = vocode_chunked(vocoder, mel, reuse_interior=False)
        reused = vocode_chunked(vocoder, mel, reuse_interior=True)
    torch.testing.assert_close(reused, direct, atol=1e-5, rtol=0)


def test_boundary_margin_is_needed() -> None:
    """Near a cut a chunk really differs from the whole pass, beyond the margin it does not."""
    config = micro_config().vocoder
    torch.manual_seed(0)
    vocoder = HiFiGAN(config).eval()
    redraw(vocoder, 0)
    mel = torch.randn(1, config.num_mels, 256)
    hop, m = config.hop_length, boundary_margin(config)
    with torch.no_grad():
        whole = vocoder(mel)
        chunk = vocoder(mel[..., 64:192])  # cuts at frames 64 and 192
    aligned = whole[:, 64 * hop : 64 * hop + chunk.shape[-1]]
    assert (chunk[:, :hop] - aligned[:, :hop]).abs().max() > 1e-4
    assert (chunk[:, -hop:] - aligned[:, -hop:]).abs().max() > 1e-4
    inner = slice(m * hop, chunk.shape[-1] - m * hop)
    torch.testing.assert_close(chunk[:, inner], aligned[:, inner], atol=1e-6, rtol=0)


# --- solver and guidance ----------------------------------------------------------------


def test_euler_with_constant_velocity_moves_by_it() -> None:
    noise = torch.randn(1, 2, 6, 4)
    assert torch.equal(euler_sample(lambda x, t: torch.zeros_like(x), noise, 5), noise)
    moved = euler_sample(lambda x, t: torch.ones_like(x), noise, 4)
    torch.testing.assert_close(moved, noise + 1)


def test_euler_feeds_accumulated_times_and_resets_incontext_frames() -> None:
    noise, target = torch.randn(2, 2, 6, 4), torch.randn(2, 2, 6, 4)
    seen: list[tuple[Tensor, Tensor]] = []

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        seen.append((x.clone(), t.clone()))
        return torch.full_like(x, 0.3)

    euler_sample(velocity, noise, 3, incontext=target, incontext_frames=2, sigma_min=1e-4)
    t_span = torch.linspace(0, 1, 4)
    t, dt = t_span[0], t_span[1] - t_span[0]
    for step, (x, fed) in enumerate(seen, start=1):
        assert fed.shape == (2,) and torch.equal(fed, t.expand(2))
        expected = (1 - (1 - 1e-4) * t) * noise[:, :, :2] + t * target[:, :, :2]
        assert torch.equal(x[:, :, :2], expected)
        t = t + dt
        if step < 3:
            dt = t_span[step + 1] - t
    assert seen[2][1][0].item() == pytest.approx(2 / 3, abs=1e-7)


class LinearEstimator(torch.nn.Module):
    """v = sum over input channel thirds (x + ic + 2 cond) + t, for guidance arithmetic."""

    def __init__(self) -> None:
        super().__init__()
        self.proj_out = torch.nn.Linear(1, 1)

    def forward(self, h: Tensor, t: Tensor) -> Tensor:
        x, ic, cond = h.chunk(3, dim=1)
        return x + ic + 2 * cond + t[:, None, None, None]


def test_guidance_combines_zero_cond_and_cond_branches() -> None:
    x, ic, cond = torch.randn(3, 2, 2, 4, 4).unbind(0)
    t = torch.tensor([0.25, 0.5])
    estimator = LinearEstimator()
    plain = x + ic + t[:, None, None, None]
    guided = GuidedVelocity(estimator, cond, ic, guidance_scale=1.5)(x, t)  # type: ignore[arg-type]
    torch.testing.assert_close(guided, plain + 1.5 * 2 * cond)
    unguided = GuidedVelocity(estimator, cond, ic, guidance_scale=1.0)(x, t)  # type: ignore[arg-type]
    torch.testing.assert_close(unguided, plain + 2 * cond)


def test_estimator_rows_are_independent(micro: MuCodecDecoder) -> None:
    """Each row has its own timestep (the reference only works at batch size 1)."""
    h = torch.randn(3, 96, 16, 4)
    t = torch.tensor([0.1, 0.5, 0.9])
    estimator = micro.flow.estimator
    with torch.no_grad():
        batched = estimator(h, t)
        for b in range(3):
            single = estimator(h[b : b + 1], t[b : b + 1])
            torch.testing.assert_close(batched[b : b + 1], single, atol=1e-5, rtol=0)


def test_precision_is_given_at_construction(micro: MuCodecDecoder) -> None:
    assert micro.precision == "float32"
    low = build_decoder(micro_config(), seed=3, device="meta", precision="bfloat16")
    assert low.precision == "bfloat16"
    with pytest.raises(AttributeError):
        micro.precision = "bfloat16"  # type: ignore[misc]
    with pytest.raises(ValueError, match="'int8'"):
        build_decoder(micro_config(), device="meta", precision="int8")  # type: ignore[arg-type]
    assert "dtype" not in SamplingConfig().to_dict()


def test_sampling_config_saved_with_the_old_dtype_field() -> None:
    # Checkpoints written before precision moved out carry "dtype": "float32".
    assert SamplingConfig.from_dict({"num_steps": 3, "dtype": "float32"}) == SamplingConfig(
        num_steps=3
    )
    with pytest.raises(ValueError, match="precision='bfloat16'"):
        SamplingConfig.from_dict({"dtype": "bfloat16"})
