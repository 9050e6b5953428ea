"""Decoding every container, bit depth, rate and channel count to 48 kHz stereo float.

`decode_song` is phase one of a song: decode -> downmix -> resample into a local spool. These
tests read the spool back and compare it with a reference made independently from the source
(soundfile read + one-shot soxr), so they check the whole decode path, not just its parts.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from pipeline.io import StorageOptions
from pipeline.prepare.audio import DecodeError, open_audio
from pipeline.prepare.dsp import resampled_length, to_stereo
from pipeline.prepare.lyrics import NO_LYRICS
from pipeline.prepare.records import SongSource
from pipeline.prepare.song import decode_song
from testing.synth import synth_song, write_audio
from tests.pipeline.helpers import reference_48k, snr_db, write_song

STORAGE = StorageOptions()


def _decode(path: str, scratch: str) -> tuple[object, np.ndarray]:
    decoded = decode_song(SongSource("s", path), NO_LYRICS, STORAGE, scratch)
    try:
        audio = np.fromfile(decoded.spool_path, dtype=np.float32).reshape(-1, 2)
    finally:
        decoded.discard()
    assert not os.listdir(scratch), "the spool must be removed"
    return decoded, audio


@pytest.mark.parametrize(
    ("ext", "subtype", "rate", "channels"),
    [
        ("wav", "PCM_U8", 8_000, 1),
        ("wav", "PCM_16", 44_100, 2),
        ("wav", "PCM_24", 96_000, 2),
        ("wav", "PCM_32", 32_000, 2),
        ("wav", "FLOAT", 22_050, 2),
        ("wav", "DOUBLE", 48_000, 2),
        ("flac", "PCM_16", 48_000, 2),
        ("flac", "PCM_24", 192_000, 1),
        ("flac", "PCM_S8", 11_025, 2),
        ("aiff", "PCM_16", 16_000, 2),
    ],
)
def test_lossless_sources_decode_to_a_faithful_48k_stereo_stream(
    scratch, tmp_path, ext, subtype, rate, channels
):
    path = str(tmp_path / f"song.{ext}")
    source = write_song(path, seconds=1.5, rate=rate, channels=channels, subtype=subtype)
    decoded, audio = _decode(path, scratch)
    assert (decoded.info.sample_rate, decoded.info.channels) == (rate, channels)
    assert decoded.source_frames == len(source)
    assert decoded.frames == len(audio) == resampled_length(len(source), rate)
    assert decoded.source_duration_s == pytest.approx(1.5, abs=1e-3)
    reference = reference_48k(to_stereo(source), rate)
    if rate == 48_000:
        np.testing.assert_allclose(audio, reference, atol=1e-6)
    else:
        assert snr_db(reference, audio) > 70
    assert decoded.peak == pytest.approx(np.abs(audio).max(), abs=1e-7)


@pytest.mark.parametrize(
    ("ext", "subtype", "rate", "channels"),
    [
        ("ogg", "VORBIS", 44_100, 2),
        ("mp3", "MPEG_LAYER_III", 32_000, 1),
        ("m4a", None, 48_000, 2),
        ("m4a", None, 44_100, 6),
        ("aac", None, 22_050, 1),
        ("opus", None, 48_000, 2),
        ("wma", None, 44_100, 2),
    ],
)
def test_lossy_sources_decode_with_the_right_length_level_and_spectrum(
    scratch, tmp_path, ext, subtype, rate, channels
):
    seconds = 2.0
    path = str(tmp_path / f"song.{ext}")
    source = write_song(path, seconds=seconds, rate=rate, channels=channels, subtype=subtype)
    decoded, audio = _decode(path, scratch)
    assert decoded.info.channels == channels
    if ext not in ("opus",):  # Opus always decodes at 48 kHz whatever went in.
        assert decoded.info.sample_rate == rate
    # Encoder delay and frame padding add a little; never a whole frame's worth of seconds.
    assert len(audio) / 48_000 == pytest.approx(seconds, abs=0.1)
    reference = reference_48k(to_stereo(source), rate)
    level = np.sqrt(np.mean(audio**2)) / np.sqrt(np.mean(reference**2))
    assert 0.8 < level < 1.25
    spectrum = np.abs(np.fft.rfft(audio[:, 0], n=1 << 16))[: 1 << 13]  # Up to ~6 kHz.
    reference_spectrum = np.abs(np.fft.rfft(reference[:, 0], n=1 << 16))[: 1 << 13]
    assert np.corrcoef(spectrum, reference_spectrum)[0, 1] > 0.9


@pytest.mark.parametrize("channels", [3, 4, 5, 6, 7, 8])
def test_multichannel_sources_are_downmixed_and_the_peak_never_rises(scratch, tmp_path, channels):
    path = str(tmp_path / "surround.wav")
    source = write_song(path, seconds=1.0, rate=48_000, channels=channels, subtype="FLOAT")
    _, audio = _decode(path, scratch)
    np.testing.assert_allclose(audio, to_stereo(source), atol=1e-6)
    assert np.abs(audio).max() <= np.abs(source).max() + 1e-6


def test_mono_is_duplicated_to_both_channels(scratch, tmp_path):
    path = str(tmp_path / "mono.flac")
    source = write_song(path, seconds=1.0, rate=48_000, channels=1)
    _, audio = _decode(path, scratch)
    np.testing.assert_array_equal(audio[:, 0], audio[:, 1])
    np.testing.assert_allclose(audio[:, 0], source[:, 0], atol=1e-6)


@pytest.mark.parametrize("rate", [8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 88_200, 176_400])
def test_every_rate_from_8_to_192_khz_resamples_to_the_exact_48k_length(scratch, tmp_path, rate):
    path = str(tmp_path / "song.flac")
    source = write_song(path, seconds=0.7, rate=rate, channels=2)
    _, audio = _decode(path, scratch)
    assert len(audio) == resampled_length(len(source), rate)
    assert snr_db(reference_48k(source, rate), audio) > 70


def test_float_source_above_full_scale_keeps_its_true_peak(scratch, tmp_path):
    path = str(tmp_path / "hot.wav")
    write_song(path, seconds=1.0, rate=48_000, channels=2, subtype="FLOAT", peak=1.6)
    decoded, _ = _decode(path, scratch)
    assert decoded.peak == pytest.approx(1.6, rel=1e-5)
    assert decoded.gain == pytest.approx(32767 / 32768 / 1.6, rel=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_samples_that_are_not_numbers_make_the_song_corrupt(scratch, tmp_path, bad):
    # A float WAV can hold NaN or infinity; whichever window holds it, even the last,
    # partial one, the song is rejected in phase one and its spool removed.
    audio = synth_song(2.0, 48_000, 2, seed=4)
    audio[-10, 1] = bad
    path = str(tmp_path / "bad.wav")
    sf.write(path, audio, 48_000, subtype="FLOAT")
    with pytest.raises(DecodeError, match="corrupt: decoded samples contain NaN or infinity"):
        decode_song(SongSource("s", path), NO_LYRICS, STORAGE, scratch, window_frames=48_000)
    assert not os.listdir(scratch)


def test_long_files_are_streamed_in_blocks(tmp_path):
    """`open_audio` yields bounded blocks, so a long file never sits in memory whole."""
    path = str(tmp_path / "long.flac")
    write_audio(path, synth_song(12.0, 8_000, 2, 0), 8_000, "PCM_16")
    with open_audio(path, "flac") as stream:
        sizes = [len(block) for block in stream.blocks]
    assert len(sizes) == 3 and max(sizes) == 5 * 8_000


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.wav", b"", "empty: the file has 0 bytes"),
        ("empty.m4a", b"", "empty: the file has 0 bytes"),
        ("text.mp3", b"these are not the droids\n" * 40, "corrupt or unsupported"),
        ("text.m4a", b"these are not the droids\n" * 40, "ffprobe"),
        ("noise.flac", bytes(range(256)) * 16, "corrupt or unsupported"),
    ],
)
def test_unusable_files_raise_decode_errors_with_a_reason(scratch, tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DecodeError, match=reason):
        _decode(str(path), scratch)
    assert not os.listdir(scratch)


def test_sample_rate_below_8_khz_is_unsupported(scratch, tmp_path):
    path = str(tmp_path / "low.wav")
    sf.write(path, np.zeros((4000, 1), np.float32), 4_000)
    with pytest.raises(DecodeError, match="unsupported sample rate 4000 Hz"):
        _decode(path, scratch)


@pytest.mark.parametrize(("ext", "subtype"), [("wav", "PCM_16"), ("wav", "PCM_24"), ("flac", None)])
def test_file_cut_in_half_is_rejected(scratch, tmp_path, ext, subtype):
    path = tmp_path / f"cut.{ext}"
    write_song(str(path), seconds=3.0, rate=44_100, channels=2, subtype=subtype or "PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError, match=r"truncated|corrupt"):
        _decode(str(path), scratch)


def test_m4a_with_its_tail_cut_is_rejected(scratch, tmp_path):
    """Both layouts: `moov` at the end (ffmpeg's default) and at the front (+faststart)."""
    import subprocess

    wav = str(tmp_path / "src.wav")
    write_song(wav, seconds=3.0, rate=44_100, channels=2)
    for flags in ([], ["-movflags", "+faststart"]):
        path = tmp_path / "cut.m4a"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", wav, "-c:a", "aac", *flags, path],
            check=True,
        )
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(DecodeError, match=r"truncated|corrupt|no audio stream"):
            _decode(str(path), scratch)
