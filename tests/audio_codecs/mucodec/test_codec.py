"""MuCodec behind the codec interface: the same codes as the tokenizer, audio back at 48 kHz
through the decoder the spot-check names, and the registry's refusals."""

from __future__ import annotations

import pytest
import torch

from audio_codecs import registry
from audio_codecs.base import CodecSpec
from audio_codecs.mucodec.decoding import DecoderSpec
from audio_codecs.registry import load_codec
from core.errors import InvalidSetting
from mucodec.encoder.config import tiny
from mucodec.encoder.tokenizer import MuCodecTokenizer

CPU = torch.device("cpu")


def _segments() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return [torch.randn(2, n, generator=generator) * 0.1 for n in (96_000, 48_000)]


def test_codes_are_the_tokenizers_and_the_info_says_how() -> None:
    codec = load_codec(CodecSpec("mucodec", preset="tiny", seed=3), CPU)
    tokenizer = MuCodecTokenizer.from_config(tiny(), seed=3).eval()
    peaks, gains = [0.5, 0.4], [1.0, 0.9]

    encoded = codec.encode(_segments(), song_peaks=peaks, gains=gains)
    # The codec undoes the shard's gain; the tokenizer sees the audio as it was before.
    ungained = [s / g for s, g in zip(_segments(), gains, strict=True)]
    expected = tokenizer.encode_segments(ungained, song_peaks=peaks)

    assert [e.codes.shape for e in encoded] == [(1, 50), (1, 25)]
    for got, want in zip(encoded, expected, strict=True):
        assert got.codes.dtype.name == "uint16"
        assert (got.codes == want.numpy()).all()
    info = codec.info
    assert (info.codec, info.preset, info.channels, info.frame_rate) == ("mucodec", "tiny", 1, 25.0)
    assert info.weights_sha256 == "random-weights-seed-3"
    assert info.bitrate_kbps == pytest.approx(25 * 10 / 1000)  # 1 codebook of 1024 codes.


def test_decode_needs_a_decoder_and_gives_48khz_stereo() -> None:
    codec = load_codec(CodecSpec("mucodec", preset="tiny"), CPU)
    encoded = codec.encode(_segments())
    with pytest.raises(ValueError, match="no decoder"):
        codec.decode(encoded)

    # A short window (the default spans 40.96 s): the interface is under test, not the
    # windowing, which tests/mucodec/decoder covers.
    spec = DecoderSpec(preset="tiny", steps=2, guidance=1.0, window_codes=64)
    decoding = spec.codec(codec.info.recorded(), CPU)
    audio = decoding.decode(encoded[1:])

    assert [a.shape for a in audio] == [(2, 25 * 1920)]
    assert torch.isfinite(audio[0]).all()
    assert decoding.sampling == (2, 1.0) and codec.sampling == (0, 0.0)
    assert decoding.info == codec.info  # Rebuilt from what a token table records.


def test_unknown_codecs_and_presets_are_named() -> None:
    assert "tiny" in registry.plugin("mucodec").presets
    with pytest.raises(InvalidSetting, match="unknown codec 'mp3'"):
        registry.plugin("mp3")
    with pytest.raises(InvalidSetting, match="unknown preset 'huge'"):
        load_codec(CodecSpec("mucodec", preset="huge"), CPU)
