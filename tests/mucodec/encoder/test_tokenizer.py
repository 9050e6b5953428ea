"""The tokenizer facade: configs, presets, shapes, song-level normalisation, precision."""

from __future__ import annotations

import pytest
import torch

from mucodec.encoder.config import PRESETS, TokenizerConfig, official, preset, tiny
from mucodec.encoder.frontend import song_peak_divisor
from mucodec.encoder.tokenizer import MuCodecTokenizer

SEGMENT = int(35.84 * 48000)  # 1,720,320 samples


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_configs_round_trip_through_json(name: str) -> None:
    config = preset(name)

    again = TokenizerConfig.from_json(config.to_json())

    assert again == config
    assert again.to_json() == config.to_json()


def test_official_preset_is_the_released_model() -> None:
    config = official()

    assert config.encoder.dim == 1024 and config.encoder.depth == 12
    assert config.encoder.output_layer == 6 and config.encoder.n_blocks_run == 6
    assert (config.quantizer.n_codebooks, config.quantizer.codebook_size) == (1, 16384)
    assert config.quantizer.codebook_dim == 32
    assert config.frontend.token_rate == 25
    high = preset("high_bitrate").quantizer
    assert (high.n_codebooks, high.codebook_size) == (4, 10000)


def test_bad_configs_are_refused() -> None:
    data = tiny().to_dict()
    data["encoder"]["heads"] = 4
    with pytest.raises(ValueError, match="unknown config keys"):
        TokenizerConfig.from_dict(data)
    data = tiny().to_dict()
    data["format_version"] = 99
    with pytest.raises(ValueError, match="format_version"):
        TokenizerConfig.from_dict(data)
    with pytest.raises(KeyError, match="known"):
        preset("huge")


def test_facade_and_segment_length() -> None:
    tokenizer = MuCodecTokenizer.from_config(tiny(), seed=3)
    audio = torch.randn(2, SEGMENT) * 0.1

    codes = tokenizer.encode_segments([audio])[0]

    assert (tokenizer.sample_rate, tokenizer.frame_rate) == (48000, 25)
    assert (tokenizer.num_codebooks, tokenizer.codebook_size) == (1, 1024)
    assert codes.shape == (1, 896)
    assert codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 1024


def test_from_config_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)

    first = MuCodecTokenizer.from_config(tiny(), seed=7)
    after = torch.rand(1)
    second = MuCodecTokenizer.from_config(tiny(), seed=7)

    assert torch.equal(before, after)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_song_peak_applies_the_script_divisor(
    tiny_tokenizer: MuCodecTokenizer, golden_inputs
) -> None:
    segment = golden_inputs["input_a"][:, :96000]  # peak 0.7: no per-segment division
    song_peak = 1.25

    with_peak = tiny_tokenizer.encode_segments([segment], song_peaks=[song_peak])[0]
    divided = tiny_tokenizer.encode_segments([segment / song_peak_divisor(song_peak)])[0]
    quiet = tiny_tokenizer.encode_segments([segment], song_peaks=[0.8])[
        0
    ]  # exactly 0.8: left alone

    assert float(song_peak_divisor(song_peak)) == pytest.approx(1.5625)
    assert torch.equal(with_peak, divided)
    assert torch.equal(quiet, tiny_tokenizer.encode_segments([segment])[0])
    assert not torch.equal(with_peak, quiet)


def test_too_short_and_mono_inputs_are_refused(tiny_tokenizer: MuCodecTokenizer) -> None:
    assert tiny_tokenizer.encode_segments([torch.zeros(2, 3839)])[0].shape == (1, 2)
    with pytest.raises(ValueError, match="2 tokens"):
        tiny_tokenizer.encode_segments([torch.zeros(2, 3838)])[0]
    with pytest.raises(ValueError, match="stereo"):
        tiny_tokenizer.encode_padded(torch.zeros(1, 1, 48000))


def _with_precision(tokenizer: MuCodecTokenizer, precision: str) -> MuCodecTokenizer:
    """Another tokenizer over the same (shared) parts, built with `precision`."""
    return MuCodecTokenizer(
        tokenizer.config,
        frontend=tokenizer.frontend,
        encoder=tokenizer.encoder,
        quantizer=tokenizer.quantizer,
        precision=precision,
    )


def test_precision_is_given_at_construction(tiny_tokenizer: MuCodecTokenizer) -> None:
    assert tiny_tokenizer.precision == "float32"
    assert MuCodecTokenizer.from_config(tiny(), precision="bfloat16").precision == "bfloat16"
    with pytest.raises(AttributeError):
        tiny_tokenizer.precision = "bfloat16"  # type: ignore[misc]
    with pytest.raises(ValueError, match="'int8'"):
        MuCodecTokenizer.from_config(tiny(), precision="int8")  # type: ignore[arg-type]


def test_bf16_precision_runs_the_encoder_under_autocast(
    tiny_tokenizer: MuCodecTokenizer, golden_inputs
) -> None:
    seen: list[torch.dtype] = []

    def record(_module: object, _args: object, _out: object) -> None:
        autocast = torch.is_autocast_enabled("cpu")
        seen.append(torch.get_autocast_dtype("cpu") if autocast else torch.float32)

    low = _with_precision(tiny_tokenizer, "bfloat16")
    hook = low.encoder.blocks[0].register_forward_hook(record)
    try:
        low.encode_padded(golden_inputs["input_a"][None])
        tiny_tokenizer.encode_padded(golden_inputs["input_a"][None])
    finally:
        hook.remove()
    assert seen == [torch.bfloat16, torch.float32]


def test_bf16_autocast_agrees_with_float32(tiny_tokenizer: MuCodecTokenizer, golden_inputs) -> None:
    # The same code path as bf16 on GPU: the encoder under autocast, front end and RVQ fp32.
    audio = golden_inputs["input_a"]
    reference = tiny_tokenizer.encode_padded(audio[None], return_embeddings=True)
    low = _with_precision(tiny_tokenizer, "bfloat16").encode_padded(
        audio[None], return_embeddings=True
    )

    agreement = (low.codes == reference.codes).float().mean().item()
    assert agreement >= 0.8, agreement
    assert low.codes.dtype == torch.int64
    relative = (low.embeddings.float() - reference.embeddings).norm() / reference.embeddings.norm()
    assert relative < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_float32_and_bf16(encoder_golden, golden_inputs, golden_outputs) -> None:
    from tests.mucodec.conftest import golden_tokenizer

    tokenizer = golden_tokenizer(encoder_golden, tiny()).cuda()
    audio = golden_inputs["input_a"][None].cuda()

    fp32 = tokenizer.encode_padded(audio, return_embeddings=True)
    bf16 = _with_precision(tokenizer, "bfloat16").encode_padded(audio)

    golden = golden_outputs["layer_results.2"].cuda()
    torch.testing.assert_close(fp32.embeddings, golden, atol=1e-2, rtol=0)
    assert (fp32.codes.cpu() == golden_outputs["codes"]).float().mean() >= 0.98
    assert (bf16.codes == fp32.codes).float().mean() >= 0.8
