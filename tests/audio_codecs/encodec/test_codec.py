"""EnCodec behind the codec interface: shapes, provenance, bandwidths, rates and channels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from audio_codecs.base import CodecSpec, EncodedSegment
from audio_codecs.encodec.codec import PRESETS, load
from audio_codecs.encodec.coding import encode_frames
from audio_codecs.encodec.config import EncodecCodecConfig, codebooks_for_bandwidth, preset
from audio_codecs.encodec.signal import RESAMPLER

CPU = torch.device("cpu")
SEGMENT = 1_720_320  # 35.84 s at 48 kHz, the pipeline's segment.


def _noise(*lengths: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, n, generator=generator) * 0.1 for n in lengths]


@pytest.fixture(scope="module")
def tiny() -> object:
    return load(CodecSpec("encodec", preset="tiny", seed=3), CPU)


@pytest.fixture(scope="module")
def tiny_24k() -> object:
    return load(CodecSpec("encodec", preset="tiny_24k", seed=3), CPU)


def test_presets_and_configs_round_trip() -> None:
    assert set(PRESETS) == {"24khz", "48khz", "tiny_24k", "tiny_48k", "tiny"}
    assert preset("tiny") == preset("tiny_48k")
    for name in PRESETS:
        config = preset(name)
        assert EncodecCodecConfig.from_json(config.to_json()) == config
    with pytest.raises(KeyError, match="unknown preset 'huge'"):
        preset("huge")


def test_released_presets_use_the_official_codebooks_per_bandwidth(encodec_golden) -> None:
    for name in ("24khz", "48khz"):
        manifest = json.loads((encodec_golden / f"manifest_encodec_{name}.json").read_text())
        config = preset(name)
        assert list(config.target_bandwidths) == manifest["model_args"]["target_bandwidths"]
        assert config.frame_rate == manifest["derived"]["frame_rate"]
        assert config.n_q == manifest["quantizer"]["n_q"]
        for bw, n_q in manifest["derived"]["n_q_per_bandwidth"].items():
            assert codebooks_for_bandwidth(config, float(bw)) == n_q


def test_48k_segment_encodes_to_one_joint_stream_and_decodes_to_stereo(tiny) -> None:
    [encoded] = tiny.encode(_noise(SEGMENT))
    n_chunks = math.ceil(SEGMENT / 47_520)  # 37 chunks; the last is 9,600 samples.
    assert encoded.codes.shape == (4, 36 * 150 + 30) and encoded.codes.dtype == np.uint16
    assert encoded.chunk_frames == (150,) * 36 + (30,)
    assert encoded.scales.shape == (n_chunks,) and encoded.scales.dtype == np.float32
    [audio] = tiny.decode([encoded])
    assert audio.shape == (2, SEGMENT) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all()


def test_info_bitrate_and_bandwidth_option(tiny) -> None:
    info = tiny.info
    assert (info.codec, info.preset, info.channels, info.mode) == ("encodec", "tiny", 1, "encode")
    assert (info.sample_rate, info.frame_rate, info.codebook_size) == (48_000, 150.0, 64)
    assert info.weights_sha256 == "random-weights-seed-3"
    assert info.num_codebooks == 4  # Default: the largest bandwidth, all codebooks.
    assert info.bitrate_kbps == pytest.approx(3.6)
    assert EncodecCodecConfig.from_json(info.config) == preset("tiny")

    low = load(CodecSpec("encodec", preset="tiny", seed=3, options=(("bandwidth", "0.9"),)), CPU)
    assert low.num_codebooks == 1 and low.info.bitrate_kbps == pytest.approx(0.9)
    [full], [one] = tiny.encode(_noise(30_000)), low.encode(_noise(30_000))
    assert np.array_equal(one.codes, full.codes[:1])  # Residual stages: a prefix.
    with pytest.raises(ValueError, match="not offered"):
        load(CodecSpec("encodec", preset="tiny", options=(("bandwidth", "6"),)), CPU)


def test_48k_codes_are_the_official_chunked_encode(tiny) -> None:
    segment = _noise(95_140)[0]
    [encoded] = tiny.encode([segment])
    frames = encode_frames(tiny.model, tiny.config, segment[None], 4)
    assert encoded.chunk_frames == (150, 149, 1)
    assert np.array_equal(encoded.codes, torch.cat([f.codes[0] for f in frames], -1).numpy())
    assert np.array_equal(encoded.scales, torch.cat([f.scale for f in frames]).numpy())
    assert tiny.decode([encoded])[0].shape == (2, 95_360)  # 47,520 * 2 + 320, as official.


def test_each_segment_as_if_alone_and_gains_undone(tiny) -> None:
    a, b, c = _noise(60_000, 60_000, 20_000, seed=1)
    together = tiny.encode([a, b, c])
    alone = [tiny.encode([x])[0] for x in (a, b, c)]
    for got, want in zip(together, alone, strict=True):
        assert np.array_equal(got.codes, want.codes)
        np.testing.assert_allclose(got.scales, want.scales, rtol=1e-6)
    [halved] = tiny.encode([a * 0.5], gains=[0.5])
    assert np.array_equal(halved.codes, alone[0].codes)


def test_scales_and_chunk_frames_must_fit_the_codes(tiny) -> None:
    [encoded] = tiny.encode(_noise(60_000))
    for broken in (
        EncodedSegment(encoded.codes, encoded.scales[:1], encoded.chunk_frames),
        EncodedSegment(encoded.codes, chunk_frames=encoded.chunk_frames),  # Scales lost.
        EncodedSegment(encoded.codes[:, :-1], encoded.scales, encoded.chunk_frames),
    ):
        with pytest.raises(ValueError, match="do not fit"):
            tiny.decode([broken])


def test_24k_mixes_to_mono_and_resamples(tiny_24k) -> None:
    info = tiny_24k.info
    assert (info.sample_rate, info.frame_rate, info.channels) == (24_000, 75.0, 1)
    left, right = _noise(96_000, seed=2)[0]
    mean = (left + right) / 2
    [stereo] = tiny_24k.encode([torch.stack([left, right])])
    [mono] = tiny_24k.encode([torch.stack([mean, mean])])
    assert np.array_equal(stereo.codes, mono.codes)
    assert stereo.codes.shape == (4, 150) and stereo.chunk_frames == () and stereo.scales.size == 0
    [audio] = tiny_24k.decode([stereo])
    assert audio.shape == (2, 96_000) and torch.equal(audio[0], audio[1])


def test_presets_are_deterministic_in_the_seed() -> None:
    segment = _noise(30_000)
    first = load(CodecSpec("encodec", preset="tiny_24k", seed=7), CPU).encode(segment)[0]
    again = load(CodecSpec("encodec", preset="tiny_24k", seed=7), CPU).encode(segment)[0]
    other = load(CodecSpec("encodec", preset="tiny_24k", seed=8), CPU).encode(segment)[0]
    assert np.array_equal(first.codes, again.codes)
    assert not np.array_equal(first.codes, other.codes)
    assert all(len(set(row.tolist())) > 4 for row in first.codes)  # Codebooks are used.


@pytest.mark.parametrize(("freq", "tolerance"), [(1_000, 1e-3), (10_000, 5e-3)])
def test_sine_survives_48_24_48_khz(freq: int, tolerance: float) -> None:
    """Windowed sinc (24 zero crossings, roll-off 0.945): the interior (50 ms from the ends,
    where the filter sees zero padding) of a 0.5 amplitude tone comes back within tolerance."""
    t = torch.arange(96_000) / 48_000
    tone = 0.5 * torch.sin(2 * math.pi * freq * t)[None]
    back = RESAMPLER.resample(RESAMPLER.resample(tone, 48_000, 24_000), 24_000, 48_000)
    assert back.shape == tone.shape
    assert (back - tone)[..., 2_400:-2_400].abs().max() < tolerance
