"""Decoding: any catalog audio file -> a stream of float32 blocks at its native rate.

libsndfile (soundfile) reads wav/flac/ogg/mp3/aiff; everything else (m4a/aac, opus, wma, ...)
goes through the ffmpeg binary: ffprobe describes the file, and ffmpeg streams raw float32 PCM
through a pipe, so an hour-long file never sits in memory whole (pydub's `AudioSegment` would
load it whole). A file libsndfile refuses is retried with ffmpeg.

A file is truncated when it decodes more than TRUNCATION_TOLERANCE_S short of an exact
declared length; estimated lengths never reject (`pipeline.prepare.duration`).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from core.errors import RejectedInput
from pipeline.io import StorageOptions, filesystem, is_local
from pipeline.prepare.duration import DeclaredLength, Reported, declared_length

SOUNDFILE_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "ogg", "oga", "mp3", "aif", "aiff", "aifc", "w64", "rf64", "caf"}
)
MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 384_000
BLOCK_SECONDS = 5.0
# A decoded stream this much shorter than an exact declared length is truncated, not just
# rounded: it absorbs encoder delay and padding, which not every header accounts for.
TRUNCATION_TOLERANCE_S = 0.5
# libavformat's warning when it guessed a duration from the bit rate; ffprobe's JSON does
# not say how a duration was obtained.
_FFPROBE_ESTIMATE = "Estimating duration from bitrate"


class DecodeError(RejectedInput):
    """The file cannot be used; the message is the reason written to the rejects table."""


@dataclass(frozen=True)
class AudioInfo:
    """What the file declares: its format, and its length with the evidence for it."""

    sample_rate: int
    channels: int
    declared: DeclaredLength
    codec: str
    # The file's own tags (ID3, Vorbis comments, MP4 atoms, RIFF INFO), when it has them.
    artist: str | None = None
    album: str | None = None


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
    if info.declared.exact and info.declared.seconds == 0:
        raise DecodeError("empty: the file holds no audio frames")


def _check_complete(declared: DeclaredLength, decoded_frames: int, sample_rate: int) -> None:
    """Reject audio that stops short of an exact declared length; estimates never reject."""
    decoded_s = decoded_frames / sample_rate
    if declared.exact and declared.seconds - decoded_s > TRUNCATION_TOLERANCE_S:
        raise DecodeError(
            f"truncated: {declared.source} declares {declared.seconds:.2f} s, "
            f"only {decoded_s:.2f} s decodable"
        )


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
            sound = sf.SoundFile(os.fsencode(local_path))  # Bytes: any name opens.
        except (sf.LibsndfileError, RuntimeError, ValueError) as error:
            soundfile_reason = str(error)
        else:
            with sound:
                stream = _soundfile_stream(sound, local_path)
                # libsndfile ends an mp3 without a Xing or VBRI tag at the length it guessed
                # from the first frame's bit rate, losing the rest of a VBR file; ffmpeg
                # decodes every frame.
                if sound.format != "MP3" or stream.info.declared.exact:
                    yield stream
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


def _soundfile_stream(sound: sf.SoundFile, local_path: str) -> DecodedStream:
    rate = int(sound.samplerate)
    # libsndfile's own count is only the fallback: it shortens a cut WAV, AIFF, W64 or CAF
    # to the frames present, and guesses an untagged mp3's length from its bit rate. Only
    # an Ogg's (its last granule position) and an mp3's (an estimate) say anything.
    seconds = sound.frames / rate if rate else None
    reported = Reported(sound.format, seconds, counted=sound.format not in ("OGG", "MP3"))
    info = AudioInfo(
        sample_rate=rate,
        channels=int(sound.channels),
        declared=declared_length(local_path, reported),
        codec=f"{sound.format}/{sound.subtype}",
        artist=sound.artist.strip() or None,
        album=sound.album.strip() or None,
    )
    _check_format(info)
    block = max(1, int(BLOCK_SECONDS * info.sample_rate))

    def blocks() -> Iterator[np.ndarray]:
        read = 0  # Frames actually decoded: the count the declared length is held to.
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
        _check_complete(info.declared, read, info.sample_rate)

    return DecodedStream(info=info, blocks=blocks())


def _probe(local_path: str) -> AudioInfo:
    """ffprobe: the first audio stream's format, and its length with the evidence for it."""
    command = ["ffprobe", "-v", "warning", "-of", "json", "-show_format", "-show_streams"]
    result = subprocess.run([*command, local_path], capture_output=True, check=False)
    log = result.stderr.decode("utf-8", errors="replace")
    try:
        probe = json.loads(result.stdout)
    except ValueError:
        detail = log.strip().splitlines()[-1] if log.strip() else f"exit {result.returncode}"
        raise DecodeError(f"corrupt: ffprobe failed: {detail}") from None
    streams = probe.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        raise DecodeError(
            "corrupt, truncated or unsupported: ffprobe found no audio stream "
            "(a cut-off MP4/M4A loses its index)"
        )
    stream = audio[0]
    try:
        sample_rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    except (KeyError, ValueError, TypeError):
        raise DecodeError("corrupt: ffprobe reports no sample rate or channel count") from None
    duration = stream.get("duration")
    if duration is None and len(streams) == 1:
        # The format's duration is its longest stream's: the audio's only when it is alone.
        duration = probe.get("format", {}).get("duration")
    try:
        seconds = float(duration) if duration not in (None, "N/A") else None
    except ValueError:
        seconds = None
    reported = Reported(
        probe.get("format", {}).get("format_name", ""), seconds, _FFPROBE_ESTIMATE in log
    )
    tags = _tags(probe.get("format", {}), stream)
    return AudioInfo(
        sample_rate=sample_rate,
        channels=channels,
        declared=declared_length(local_path, reported),
        codec=str(stream.get("codec_name", "unknown")),
        artist=tags.get("artist") or tags.get("album_artist"),
        album=tags.get("album"),
    )


def _tags(*sections: dict) -> dict[str, str]:
    """ffprobe's tags of the container, then the stream (Ogg keeps them there), keys folded:
    containers spell them `artist`, `ARTIST` or `Artist`."""
    tags: dict[str, str] = {}
    for section in sections:
        for key, value in (section.get("tags") or {}).items():
            text = str(value).strip()
            if text:
                tags.setdefault(str(key).lower(), text)
    return tags


@contextlib.contextmanager
def _ffmpeg_stream(local_path: str) -> Iterator[DecodedStream]:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        raise DecodeError("unsupported: this format needs ffmpeg and ffprobe on PATH")
    info = _probe(local_path)
    _check_format(info)
    command = [
        "ffmpeg", "-nostdin", "-v", "error", "-i", local_path, "-map", "0:a:0",
        "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(info.channels), "pipe:1",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
        assert process.stdout is not None
        try:
            yield DecodedStream(info=info, blocks=_ffmpeg_blocks(process, info, stderr))
        finally:
            if process.poll() is None:
                process.kill()
            process.stdout.close()
            process.wait()


def _ffmpeg_blocks(process: subprocess.Popen, info: AudioInfo, stderr) -> Iterator[np.ndarray]:
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
    _check_complete(info.declared, read, info.sample_rate)
