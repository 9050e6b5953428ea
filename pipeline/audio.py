"""Decoding: any catalog audio file -> a stream of float32 blocks at its native rate.

libsndfile (soundfile) reads wav/flac/ogg/mp3/aiff; everything else (m4a/aac, opus, wma, ...)
goes through the ffmpeg binary: pydub's ffprobe wrapper describes the file, and ffmpeg streams
raw float32 PCM through a pipe, so an hour-long file never sits in memory whole (pydub's own
`AudioSegment` would load it whole). A file libsndfile refuses is retried with ffmpeg.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from pydub.utils import mediainfo_json

from pipeline.io import StorageOptions, filesystem, is_local

SOUNDFILE_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "ogg", "oga", "mp3", "aif", "aiff", "aifc", "w64", "rf64", "caf"}
)
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 384_000
BLOCK_SECONDS = 5.0
# A decoded stream this much shorter than its header promised is truncated, not just rounded.
TRUNCATION_TOLERANCE_S = 0.5


class DecodeError(Exception):
    """The file cannot be used; the message is the reason written to the rejects table."""


@dataclass(frozen=True)
class AudioInfo:
    """What the container declares. `frames` is None when it does not say (some streams)."""

    sample_rate: int
    channels: int
    frames: int | None
    codec: str


@dataclass
class DecodedStream:
    """Blocks of float32 audio `[frames, channels]` at `info.sample_rate`, in order."""

    info: AudioInfo
    blocks: Iterator[np.ndarray]


def _extension(url: str) -> str:
    name = posixpath.basename(url)
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def _check_format(info: AudioInfo) -> None:
    if info.channels < 1:
        raise DecodeError("unsupported: no audio channels")
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise DecodeError(
            f"unsupported sample rate {info.sample_rate} Hz "
            f"(accepted: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)"
        )
    if info.frames == 0:
        raise DecodeError("empty: the file holds no audio frames")


@contextlib.contextmanager
def local_copy(url: str, storage: StorageOptions, scratch_dir: str) -> Iterator[str]:
    """A local path for `url`: the file itself when local, else a scratch download."""
    fs, path = filesystem(url, storage)
    if is_local(fs):
        yield path
        return
    handle, local = tempfile.mkstemp(dir=scratch_dir, suffix="." + (_extension(url) or "bin"))
    os.close(handle)
    try:
        fs.get_file(path, local)
        yield local
    finally:
        os.remove(local)


@contextlib.contextmanager
def open_audio(local_path: str, extension: str) -> Iterator[DecodedStream]:
    """Decode a local file; raises DecodeError with a reason when it cannot be used."""
    if not os.path.isfile(local_path):
        raise DecodeError("unreadable: not a regular file")
    if os.path.getsize(local_path) == 0:
        raise DecodeError("empty: the file has 0 bytes")
    if extension in SOUNDFILE_EXTENSIONS:
        try:
            sound = sf.SoundFile(local_path)
        except (sf.LibsndfileError, RuntimeError, ValueError) as error:
            soundfile_reason = str(error)
        else:
            with sound:
                yield _soundfile_stream(sound, extension)
            return
        try:
            with _ffmpeg_stream(local_path) as stream:
                yield stream
            return
        except DecodeError as error:
            raise DecodeError(
                f"corrupt or unsupported: libsndfile: {soundfile_reason}; ffmpeg: {error}"
            ) from None
    with _ffmpeg_stream(local_path) as stream:
        yield stream


def _soundfile_stream(sound: sf.SoundFile, extension: str) -> DecodedStream:
    # MP3 frame counts from libsndfile are estimates, so only exact formats are checked.
    exact_length = extension != "mp3"
    info = AudioInfo(
        sample_rate=int(sound.samplerate),
        channels=int(sound.channels),
        frames=int(sound.frames) if exact_length else None,
        codec=f"{sound.format}/{sound.subtype}",
    )
    _check_format(info)
    block = max(1, int(BLOCK_SECONDS * info.sample_rate))
    expected = info.frames
    if expected is not None and sound.format == "WAV":
        # libsndfile shortens a WAV whose data chunk runs past the end of the file to the
        # frames present, so a WAV cut in half reads as a shorter song; its header does not.
        expected = max(expected, _wav_declared_frames(sound.name) or 0)

    def blocks() -> Iterator[np.ndarray]:
        read = 0
        while True:
            try:
                data = sound.read(block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as error:
                raise DecodeError(
                    f"corrupt: decoding failed after {read} frames: {error}"
                ) from None
            if len(data) == 0:
                break
            read += len(data)
            yield data
        if read == 0:
            raise DecodeError("empty: no audio frames could be decoded")
        if (
            exact_length
            and expected
            and expected - read > TRUNCATION_TOLERANCE_S * (info.sample_rate)
        ):
            raise DecodeError(
                f"truncated: header declares {expected} frames, only {read} decodable"
            )

    return DecodedStream(info=info, blocks=blocks())


def _wav_declared_frames(local_path: str) -> int | None:
    """Frames the `data` chunk of a RIFF/WAVE header declares; None if it does not say.

    Streaming writers leave the size 0 or 0xFFFFFFFF (unknown), and RF64/W64 keep it
    elsewhere; those return None and are trusted as libsndfile reads them.
    """
    with open(local_path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RIFX") or header[8:] != b"WAVE":
            return None
        order = "<" if header[:4] == b"RIFF" else ">"
        block_align = 0
        while len(chunk := handle.read(8)) == 8:
            chunk_id, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
            if chunk_id == b"data":
                if block_align and size not in (0, 0xFFFFFFFF):
                    return size // block_align
                return None
            padded = size + (size & 1)  # Chunks are padded to even sizes.
            if chunk_id == b"fmt ":
                body = handle.read(padded)
                if len(body) >= 14:
                    block_align = struct.unpack(order + "H", body[12:14])[0]
            else:
                handle.seek(padded, os.SEEK_CUR)
    return None


def _probe(local_path: str) -> tuple[AudioInfo, float | None]:
    """ffprobe through pydub: the first audio stream's format and the declared duration."""
    try:
        probe = mediainfo_json(local_path)
    except Exception as error:  # pydub raises bare exceptions on ffprobe failure.
        raise DecodeError(f"corrupt: ffprobe failed: {error}") from None
    audio = [s for s in probe.get("streams", []) if s.get("codec_type") == "audio"]
    if not audio:
        raise DecodeError(
            "corrupt, truncated or unsupported: ffprobe found no audio stream "
            "(a cut-off MP4/M4A loses its index)"
        )
    stream = audio[0]
    try:
        info = AudioInfo(
            sample_rate=int(stream["sample_rate"]),
            channels=int(stream["channels"]),
            frames=None,
            codec=str(stream.get("codec_name", "unknown")),
        )
    except (KeyError, ValueError, TypeError):
        raise DecodeError("corrupt: ffprobe reports no sample rate or channel count") from None
    duration = stream.get("duration") or probe.get("format", {}).get("duration")
    try:
        declared = float(duration) if duration not in (None, "N/A") else None
    except ValueError:
        declared = None
    return info, declared


@contextlib.contextmanager
def _ffmpeg_stream(local_path: str) -> Iterator[DecodedStream]:
    if shutil.which("ffmpeg") is None:
        raise DecodeError("unsupported: this format needs ffmpeg, which is not installed")
    info, declared_s = _probe(local_path)
    _check_format(info)
    command = [
        "ffmpeg", "-nostdin", "-v", "error", "-i", local_path, "-map", "0:a:0",
        "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(info.channels), "pipe:1",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        assert process.stdout is not None
        try:
            yield DecodedStream(info=info, blocks=_ffmpeg_blocks(process, info, declared_s, stderr))
        finally:
            if process.poll() is None:
                process.kill()
            process.stdout.close()
            process.wait()


def _ffmpeg_blocks(
    process: subprocess.Popen, info: AudioInfo, declared_s: float | None, stderr
) -> Iterator[np.ndarray]:
    frame_bytes = 4 * info.channels
    block_bytes = max(1, int(BLOCK_SECONDS * info.sample_rate)) * frame_bytes
    read = 0
    carry = b""
    while chunk := process.stdout.read(block_bytes):
        chunk = carry + chunk
        usable = len(chunk) - len(chunk) % frame_bytes
        carry = chunk[usable:]
        if usable:
            read += usable // frame_bytes
            yield np.frombuffer(chunk[:usable], dtype="<f4").reshape(-1, info.channels)
    code = process.wait()
    stderr.seek(0)
    message = stderr.read().decode("utf-8", errors="replace").strip().splitlines()
    if code != 0:
        detail = message[-1] if message else f"exit status {code}"
        reason = "crashed" if code < 0 else "failed"
        raise DecodeError(f"corrupt: ffmpeg {reason} after {read} frames: {detail}")
    if read == 0:
        raise DecodeError("empty: no audio frames could be decoded")
    decoded_s = read / info.sample_rate
    if declared_s is not None and declared_s - decoded_s > TRUNCATION_TOLERANCE_S:
        raise DecodeError(
            f"truncated: container declares {declared_s:.2f} s, only {decoded_s:.2f} s decodable"
        )
