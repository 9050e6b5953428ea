"""DAC behind the codec interface: shapes, provenance, modes, folded channels, gains."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audio_codecs.base import CodecSpec
from audio_codecs.dac import codec as dac_codec
from audio_codecs.dac.codec import PRESETS, load
from audio_codecs.dac.config import DacCodecConfig, preset
from audio_codecs.dac.model import encode, preprocess
from audio_codecs.dac.resample import RESAMPLER

CPU = torch.device("cpu")
# 81920 samples at 48 kHz are 75264 at 44.1 kHz = 147 frames of 512 (and 85 frames at 16 kHz).
LENGTH_44K, LENGTH_16K = 81920, 81600


def _segments(length: int, count: int = 2, seed: int = 5) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, length, generator=generator) * 0.1 for _ in range(count)]


def _spec(name: str = "tiny", mode: str = "encode", seed: int = 3) -> CodecSpec:
    return CodecSpec("dac", preset=name, seed=seed, options=(("mode", mode),))


def test_presets_and_their_derived_values() -> None:
    assert set(PRESETS) == {
        "44khz_8kbps",
        "24khz_8kbps",
        "16khz_8kbps",
        "tiny_44k",
        "tiny_16k",
        "tiny",
    }
    assert preset("tiny") == preset("tiny_44k")
    assert [preset(p).frame_rate for p in ("44khz_8kbps", "24khz_8kbps", "16khz_8kbps")] == [
        44100 / 512,
        75.0,
        50.0,
    ]
    for name in PRESETS:
        config = preset(name)
        assert DacCodecConfig.from_json(config.to_json()) == config
    with pytest.raises(KeyError, match="unknown DAC preset"):
        preset("44khz_16kbps")


def test_the_info_says_how_the_codes_were_made() -> None:
    codec = load(_spec(), CPU)
    info = codec.info
    assert codec.device == CPU
    assert (info.codec, info.preset, info.mode, info.channels) == ("dac", "tiny", "encode", 2)
    assert (info.sample_rate, info.frame_rate) == (44100, 44100 / 512)
    assert (info.num_codebooks, info.codebook_size) == (4, 64)
    assert info.weights_sha256 == "random-weights-seed-3"
    assert DacCodecConfig.from_json(info.config) == preset("tiny")
    assert info.bitrate_kbps == pytest.approx(2 * 4 * 6 * 44100 / 512 / 1000)
    assert load(_spec(mode="compress"), CPU).info.mode == "compress"
    with pytest.raises(ValueError, match="mode"):
        load(_spec(mode="stream"), CPU)


def test_presets_are_deterministic_in_the_seed() -> None:
    a, b, c = (load(_spec(seed=s), CPU).model.state_dict() for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.conv1.weight"], c["encoder.conv1.weight"])


@torch.no_grad()
@pytest.mark.parametrize(("name", "length"), [("tiny", LENGTH_44K), ("tiny_16k", LENGTH_16K)])
def test_encode_folds_channels_and_decode_gives_48khz_stereo(name: str, length: int) -> None:
    codec = load(_spec(name), CPU)
    segments = _segments(length)
    encoded = codec.encode(segments, gains=[1.0, 0.5])
    frames = length * codec.sample_rate // 48000 // preset(name).hop

    assert [e.codes.shape for e in encoded] == [(8, frames)] * 2
    assert all(e.codes.dtype == np.uint16 and e.chunk_frames == () for e in encoded)
    assert all(math.isnan(e.input_db) for e in encoded)
    # Rows c*K..c*K+K-1 are channel c encoded alone, mono, at the model rate.
    for c in range(2):
        alone = RESAMPLER.to_model_rate(segments[0][c : c + 1][None], codec.sample_rate)
        codes = encode(codec.model, preprocess(alone, codec.config.hop)).codes[0]
        assert np.array_equal(encoded[0].codes[c * 4 : c * 4 + 4], codes.numpy())

    decoded = codec.decode(encoded)
    assert [d.shape for d in decoded] == [(2, length)] * 2
    assert all(d.dtype == torch.float32 and torch.isfinite(d).all() for d in decoded)


@torch.no_grad()
def test_gains_are_undone_before_encoding() -> None:
    codec = load(_spec(), CPU)
    (segment,) = _segments(LENGTH_44K, count=1)
    plain = codec.encode([segment])[0].codes
    scaled = codec.encode([segment * 0.5], gains=[0.5])[0].codes
    assert np.array_equal(plain, scaled)


@torch.no_grad()
def test_compress_mode_carries_its_side_data_to_decode() -> None:
    codec = load(_spec("tiny_16k", mode="compress"), CPU)
    segments = [*_segments(57600, count=1), _segments(24000, count=1)[0]]
    long, short = codec.encode(segments)

    # 1.2 s = 19200 samples at 16 kHz: 1 s windows of 34 frames every 5346 samples -> 4;
    # 0.5 s: one window, the segment itself, conv padding on.
    assert long.chunk_frames == (34,) * 4 and long.codes.shape == (8, 136)
    assert short.chunk_frames == (25,) and short.codes.shape == (8, 25)
    assert all(not math.isnan(e.input_db) for e in (long, short))

    decoded = codec.decode([long, short])
    assert decoded[0].shape == (2, 4 * 5346 * 3)  # Every window's samples, at 48 kHz.
    assert decoded[1].shape == (2, 24000)  # 25 frames of 320 (the decoder's 8 short padded).
    with pytest.raises(ValueError, match="chunk_frames and input_db"):
        codec.decode([type(long)(codes=long.codes)])


def test_mono_segments_and_foreign_codes_are_refused() -> None:
    codec = load(_spec(), CPU)
    with pytest.raises(ValueError, match=r"expected \[2, L\] stereo"):
        codec.encode([torch.zeros(1, 1000)])
    with pytest.raises(ValueError, match=r"expected codes \[8, F\]"):
        codec.decode([type(codec.encode([torch.zeros(2, 1000)])[0])(np.zeros((4, 3), np.uint16))])


def test_codec_module_has_the_registry_surface() -> None:
    assert isinstance(dac_codec.PRESETS, tuple) and "tiny" in dac_codec.PRESETS
    assert callable(dac_codec.load)


@torch.no_grad()
def test_bfloat16_precision_encodes_and_decodes() -> None:
    spec = CodecSpec("dac", preset="tiny_16k", seed=3, precision="bfloat16")
    codec = load(spec, CPU)
    (segment,) = _segments(LENGTH_16K, count=1)
    encoded = codec.encode([segment])
    assert encoded[0].codes.shape == (8, 85)
    assert codec.decode(encoded)[0].dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        load(CodecSpec("dac", preset="tiny", precision="int8"), CPU)
