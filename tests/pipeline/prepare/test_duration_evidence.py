"""Declared lengths by kind: exact ones reject a file cut short, estimates never reject.

Every file is encoded here by ffmpeg (libmp3lame, aac: Debian's ffmpeg, which the install
step brings, has both) or libsndfile from generated audio, then cut or patched the way
downloads and writers break them.
"""

from __future__ import annotations

import math
import re
import struct
import subprocess
from pathlib import Path

import pytest

from pipeline.prepare.audio import TRUNCATION_TOLERANCE_S, AudioInfo, DecodeError, open_audio
from pipeline.prepare.duration import EVIDENCE_KINDS
from pipeline.prepare.records import SongSource
from schemas.shard_sample import shard_sample_schema
from tests.pipeline.helpers import read_samples, run_unit, shard_files, small_config, write_song

RATE = 44_100


def _ffmpeg(source: Path, target: Path, *options: str) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), *options,
                    str(target)], check=True)  # fmt: skip
    return target


def _decode(path: Path) -> tuple[AudioInfo, float]:
    """The file's declared length and evidence, and the seconds that actually decode."""
    with open_audio(str(path), path.suffix[1:]) as stream:
        frames = sum(len(block) for block in stream.blocks)
    return stream.info, frames / stream.info.sample_rate


def _cut(path: Path, fraction: float, name: str) -> Path:
    data = path.read_bytes()
    cut = path.with_name(name)
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


def _assert_truncated(path: Path, source: str, declared_s: float) -> None:
    """Rejected as truncated, naming the evidence, the declared and the decodable length."""
    with pytest.raises(DecodeError) as raised:
        _decode(path)
    reason = str(raised.value)
    match = re.fullmatch(rf"truncated: {source} declares ([\d.]+) s, only ([\d.]+) s decodable",
                         reason)  # fmt: skip
    assert match, reason
    assert float(match[1]) == pytest.approx(declared_s, abs=0.01)
    assert float(match[1]) - float(match[2]) > TRUNCATION_TOLERANCE_S


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    """Six seconds of generated stereo music at 44.1 kHz, the source of every encode."""
    path = tmp_path_factory.mktemp("src") / "song.wav"
    write_song(str(path), seconds=6.0, rate=RATE, channels=2)
    return path


@pytest.mark.parametrize(("name", "options", "tag"), [
    ("cbr.mp3", ["-c:a", "libmp3lame", "-b:a", "128k"], b"Info"),
    ("vbr.mp3", ["-c:a", "libmp3lame", "-q:a", "2"], b"Xing"),
])  # fmt: skip
def test_mp3_with_a_xing_or_info_header_is_held_to_its_frame_count(
    wav, tmp_path, name, options, tag
):
    whole = _ffmpeg(wav, tmp_path / name, *options)
    assert tag in whole.read_bytes()[:4096]
    info, decoded_s = _decode(whole)
    assert info.declared.evidence == "mp3-xing"
    # Frames x 1152 less the LAME tag's encoder delay and padding: the source's exact length.
    assert info.declared.seconds == pytest.approx(6.0, abs=1e-6)
    assert decoded_s == pytest.approx(6.0, abs=0.03)
    _assert_truncated(_cut(whole, 0.45, "cut.mp3"), "mp3 Xing header", info.declared.seconds)


def test_mp3_without_a_header_is_an_estimate_and_never_rejected(wav, tmp_path):
    whole = _ffmpeg(wav, tmp_path / "bare.mp3", "-c:a", "libmp3lame", "-write_xing", "0")
    info, _ = _decode(whole)
    assert info.declared.evidence == "estimate"
    info, decoded_s = _decode(_cut(whole, 0.45, "cut.mp3"))
    assert info.declared.evidence == "estimate" and decoded_s < 3.0


def test_vbr_mp3_without_a_header_decodes_to_its_end(tmp_path):
    """Its first frame's bit rate would put its length at a fraction of the song."""
    source = tmp_path / "quiet-then-loud.wav"
    quiet = [0.001 * math.sin(i / 7) for i in range(3 * RATE)]
    loud = [0.8 * math.sin(i * i / 9e6) for i in range(17 * RATE)]
    with open(source, "wb") as handle:
        samples = struct.pack(f"<{len(quiet) + len(loud)}h",
                              *(int(v * 32767) for v in quiet + loud))  # fmt: skip
        handle.write(b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt ")
        handle.write(struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16))
        handle.write(b"data" + struct.pack("<I", len(samples)) + samples)
    vbr = _ffmpeg(source, tmp_path / "vbr.mp3", "-c:a", "libmp3lame", "-q:a", "2",
                  "-write_xing", "0")  # fmt: skip
    info, decoded_s = _decode(vbr)
    assert info.declared.evidence == "estimate"
    assert decoded_s == pytest.approx(20.0, abs=0.1)


def _with_vbri_frame(bare: Path, frames: int, target: Path) -> Path:
    """Put a Fraunhofer VBRI frame in front of a headerless 128 kbit/s 44.1 kHz mp3.

    The frame copies the first audio frame's header without its padding bit (417 bytes) and
    is otherwise zeros, which decodes as silence.
    """
    data = bare.read_bytes()
    first = data.index(b"\xff\xfb")
    header = bytearray(data[first : first + 4])
    header[2] &= ~0x02
    frame = bytearray(144 * 128_000 // RATE)
    frame[:4] = header
    # "VBRI", version, delay, quality, byte count, frame count (the TOC stays empty).
    frame[36:54] = b"VBRI" + struct.pack(">HHHII", 1, 0, 75, len(data) + len(frame), frames)
    target.write_bytes(data[:first] + bytes(frame) + data[first:])
    return target


def test_mp3_with_a_vbri_header_is_held_to_its_frame_count(wav, tmp_path):
    bare = _ffmpeg(wav, tmp_path / "bare.mp3", "-c:a", "libmp3lame", "-b:a", "128k",
                   "-write_xing", "0")  # fmt: skip
    frames = math.ceil(6.0 * RATE / 1152) + 1  # About the frames present, VBRI's included.
    whole = _with_vbri_frame(bare, frames, tmp_path / "vbri.mp3")
    info, decoded_s = _decode(whole)
    assert info.declared.evidence == "mp3-vbri"
    assert info.declared.seconds == pytest.approx(frames * 1152 / RATE)
    assert decoded_s >= 6.0
    _assert_truncated(_cut(whole, 0.45, "cut.mp3"), "mp3 VBRI header", info.declared.seconds)


def test_raw_adts_whose_estimate_overshoots_is_accepted_as_an_estimate(wav, tmp_path):
    """ffprobe guesses an ADTS stream's length from its first frames' bit rate: here 3 s at
    32 kbit/s followed by 3 s at 256 kbit/s read as far longer than the 6 s that decode."""
    low = _ffmpeg(wav, tmp_path / "low.aac", "-t", "3", "-c:a", "aac", "-b:a", "32k",
                  "-f", "adts")  # fmt: skip
    high = _ffmpeg(wav, tmp_path / "high.aac", "-ss", "3", "-c:a", "aac", "-b:a", "256k",
                   "-f", "adts")  # fmt: skip
    stream = tmp_path / "song.aac"
    stream.write_bytes(low.read_bytes() + high.read_bytes())
    info, decoded_s = _decode(stream)
    assert info.declared.evidence == "estimate"
    assert decoded_s == pytest.approx(6.0, abs=0.2)
    assert info.declared.seconds - decoded_s > TRUNCATION_TOLERANCE_S
    info, decoded_s = _decode(_cut(stream, 0.45, "cut.aac"))  # Still only an estimate.
    assert info.declared.evidence == "estimate" and decoded_s < 6.0


def test_m4a_records_its_track_length_and_a_cut_one_is_rejected(wav, tmp_path):
    """With `moov` in front the track header survives the cut and names the shortfall;
    with `moov` at the end (ffmpeg's default) the index is lost with the tail."""
    front = _ffmpeg(wav, tmp_path / "front.m4a", "-c:a", "aac", "-movflags", "+faststart")
    info, decoded_s = _decode(front)
    assert info.declared.evidence == "mp4-track"
    assert info.declared.seconds == pytest.approx(6.0, abs=0.03)
    assert decoded_s == pytest.approx(6.0, abs=0.05)
    _assert_truncated(_cut(front, 0.45, "cut.m4a"), "MP4 track header", info.declared.seconds)
    end = _ffmpeg(wav, tmp_path / "end.m4a", "-c:a", "aac")
    with pytest.raises(DecodeError, match=r"truncated|corrupt"):
        _decode(_cut(end, 0.45, "cut_end.m4a"))


@pytest.mark.parametrize(("name", "subtype", "evidence", "source"), [
    ("song.wav", "PCM_16", "wav-header", "WAV header"),
    ("song.rf64", "PCM_24", "wav-header", "WAV header"),
    ("song.aiff", "PCM_16", "aiff-header", "AIFF header"),
    ("song.flac", "PCM_16", "flac-streaminfo", None),  # libsndfile fails a cut FLAC itself.
])  # fmt: skip
def test_lossless_headers_are_exact_evidence(tmp_path, name, subtype, evidence, source):
    path = tmp_path / name
    write_song(str(path), seconds=3.0, rate=RATE, channels=2, subtype=subtype)
    info, decoded_s = _decode(path)
    assert (info.declared.evidence, info.declared.seconds, decoded_s) == (evidence, 3.0, 3.0)
    cut = _cut(path, 0.5, "cut" + path.suffix)
    if source is None:
        with pytest.raises(DecodeError, match=r"truncated|corrupt"):
            _decode(cut)
    else:
        _assert_truncated(cut, source, 3.0)


def test_unknown_sizes_in_lossless_headers_are_no_evidence(tmp_path):
    """Writers that cannot seek back leave a WAV's size 0xFFFFFFFF and FLAC's total 0."""
    wav = tmp_path / "stream.wav"
    write_song(str(wav), seconds=1.0, rate=RATE)
    data = bytearray(wav.read_bytes())
    size_at = data.index(b"data") + 4
    data[size_at : size_at + 4] = b"\xff\xff\xff\xff"
    wav.write_bytes(data)
    flac = tmp_path / "stream.flac"
    write_song(str(flac), seconds=1.0, rate=RATE)
    data = bytearray(flac.read_bytes())
    data[8 + 13] &= 0xF0  # STREAMINFO's last 36 bits before the MD5: the total samples.
    data[8 + 14 : 8 + 18] = bytes(4)
    flac.write_bytes(data)
    info, decoded_s = _decode(wav)
    assert (info.declared.evidence, info.declared.seconds, decoded_s) == ("none", None, 1.0)
    # Not decoded: libsndfile 1.2 fails at the end of a FLAC of unknown length (psf_fseek).
    with open_audio(str(flac), "flac") as stream:
        assert (stream.info.declared.evidence, stream.info.declared.seconds) == ("none", None)


@pytest.mark.parametrize("name", ["song.w64", "song.caf"])
def test_a_count_of_the_frames_present_is_no_evidence(tmp_path, name):
    """libsndfile clamps a cut W64 header to what is there, and refuses a cut CAF, whose
    length ffmpeg then estimates: neither is evidence of a loss, so the file is accepted."""
    path = tmp_path / name
    write_song(str(path), seconds=3.0, rate=RATE, channels=2)
    info, decoded_s = _decode(_cut(path, 0.5, "cut" + path.suffix))
    assert info.declared.evidence in ("none", "estimate")
    assert decoded_s < 2.0


def test_the_schema_lists_every_evidence_kind():
    schema = shard_sample_schema()
    assert schema["properties"]["duration_evidence"]["enum"] == list(EVIDENCE_KINDS)
    assert "duration_evidence" in schema["required"]


def test_segment_metadata_records_the_evidence(wav, tmp_path, scratch):
    mp3 = _ffmpeg(wav, tmp_path / "b.mp3", "-t", "2", "-c:a", "libmp3lame")
    flac = tmp_path / "a.flac"
    write_song(str(flac), seconds=2.0, rate=RATE)
    songs = [SongSource("a", str(flac)), SongSource("b", str(mp3))]
    output = str(tmp_path / "out")
    result = run_unit(songs, output, small_config(scratch))
    assert (result.songs_ok, result.rejects) == (2, [])
    evidence = {(s.meta["song_id"], s.meta["duration_evidence"]) for s in
                read_samples(shard_files(output))}  # fmt: skip
    assert evidence == {("a", "flac-streaminfo"), ("b", "mp3-xing")}
