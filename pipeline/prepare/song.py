"""One song through prepare: lyrics, decode to 48 kHz stereo, then segment samples.

Two phases, because every segment's metadata needs whole-song facts (`song_peak`, and the
`gain` that keeps 16-bit FLAC from clipping) that are known only once the song has been read
to its end. Phase one streams decode -> stereo -> 48 kHz into a float32 spool file on local
disk while tracking the peak; phase two reads the spool back one segment at a time. Memory
stays at a few blocks whatever the song's length, and the spool costs a sequential write and
read that the page cache mostly absorbs.

All input problems surface in phase one (as DecodeError), so a song either yields all its
segments or none.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from pipeline.errors import EnvironmentFailure, describe, with_retries
from pipeline.io import StorageOptions, filesystem
from pipeline.path_text import json_bytes
from pipeline.prepare.audio import AudioInfo, DecodeError, local_copy, open_audio
from pipeline.prepare.dsp import PCM16_MAX_FLOAT, TARGET_RATE, stereo_48k, to_pcm16
from pipeline.prepare.entries import open_regular
from pipeline.prepare.lyrics import NO_LYRICS, Lyrics, decode_text, lines_in_window, parse_lyrics
from pipeline.prepare.metering import SongMeter, SongQuality
from pipeline.prepare.records import Reject, SongSource
from pipeline.prepare.segment import SegmentConfig, SegmentSpan
from schemas.shard_sample import SHARD_SAMPLE_SCHEMA_VERSION, validate_sample_metadata

MAX_LYRICS_BYTES = 1 << 20  # The default cap: "lyrics" larger than 1 MiB are not lyrics.
_SPOOL_FRAME_BYTES = 2 * 4  # Stereo float32.


@dataclass(frozen=True)
class Sample:
    """One WebDataset sample: its key and members (extension -> bytes), in write order."""

    key: str
    members: tuple[tuple[str, bytes], ...]


@dataclass
class DecodedSong:
    """A song decoded to a 48 kHz stereo float32 spool on local disk (phase one's result)."""

    song: SongSource
    info: AudioInfo
    spool_path: str
    frames: int
    source_frames: int
    peak: float
    lyrics: Lyrics
    source_sha256: str  # Of the file's bytes: the fingerprint pass's, else of the copy read.
    meter: SongMeter  # Its measures, taken on the way (`meter.finish(spans)`).

    @property
    def source_duration_s(self) -> float:
        """The source's duration in seconds, at its own sample rate."""
        return self.source_frames / self.info.sample_rate

    @property
    def gain(self) -> float:
        """Scale so the loudest sample fits 16-bit PCM; 1.0 for anything already in range."""
        return 1.0 if self.peak <= PCM16_MAX_FLOAT else PCM16_MAX_FLOAT / self.peak

    def discard(self) -> None:
        """Deletes the spool file (the decoded samples on disk)."""
        if os.path.exists(self.spool_path):
            os.remove(self.spool_path)


def segment_key(song_id: str, segment_index: int) -> str:
    """The WebDataset key of segment `segment_index` of a song: `<song_id>_NNNNN`."""
    return f"{song_id}_{segment_index:05d}"


def read_lyrics(
    song: SongSource, storage: StorageOptions, max_bytes: int
) -> tuple[Lyrics, Reject | None]:
    """Reads the song's lyrics; lyrics that cannot be used cost the lyrics, not the song.

    Args:
        song: The song, with its lyrics file or inline text (or neither).
        storage: How to reach the lyrics file.
        max_bytes: Larger lyrics (the file, or the inline text in UTF-8) are refused.

    Returns:
        The lyrics (NO_LYRICS when there are none or they are refused), and the reject
        saying why when they were refused.
    """
    if song.lyrics_text:
        try:
            size = len(song.lyrics_text.encode("utf-8"))
        except UnicodeEncodeError:  # A lone surrogate, which JSON's "\ud800" can carry.
            reason = "unusable lyrics: inline text is not valid Unicode; song kept without lyrics"
            return NO_LYRICS, Reject(song.source, "lyrics", reason, song.song_id)
        if size > max_bytes:
            reason = f"unusable lyrics: {size:,} bytes of inline text, {_over_cap(max_bytes)}"
            return NO_LYRICS, Reject(song.source, "lyrics", reason, song.song_id)
        return parse_lyrics(song.lyrics_text), None
    if not song.lyrics_source:
        return NO_LYRICS, None
    try:
        data = with_retries(
            lambda: _read_head(song.lyrics_source, storage, max_bytes), song.lyrics_source
        )
    except EnvironmentFailure:
        raise  # Not the lyrics' fault: the unit stays unfinished and a rerun reads them.
    except (OSError, ValueError) as error:
        reason = f"unreadable lyrics: {describe(error)}; song kept without lyrics"
        return NO_LYRICS, Reject(song.lyrics_source, "lyrics", reason, song.song_id)
    if len(data) > max_bytes:
        reason = f"unusable lyrics: the file is {_over_cap(max_bytes)}"
        return NO_LYRICS, Reject(song.lyrics_source, "lyrics", reason, song.song_id)
    text = decode_text(data)
    if _looks_binary(text):
        reason = "unusable lyrics: binary content, not text; song kept without lyrics"
        return NO_LYRICS, Reject(song.lyrics_source, "lyrics", reason, song.song_id)
    return parse_lyrics(text), None


def _read_head(url: str, storage: StorageOptions, max_bytes: int) -> bytes:
    """The first `max_bytes` + 1 bytes: enough to tell an oversized file."""
    fs, path = filesystem(url, storage)
    with open_regular(fs, path) as handle:
        return handle.read(max_bytes + 1)


def _over_cap(max_bytes: int) -> str:
    return f"over the {max_bytes:,}-byte cap (--max-lyrics-bytes); song kept without lyrics"


def _looks_binary(text: str) -> bool:
    controls = sum(1 for char in text if ord(char) < 32 and char not in "\n\r\t")
    return controls > max(2, len(text) // 20)


def decode_song(
    song: SongSource, lyrics: Lyrics, storage: StorageOptions, scratch_dir: str,
    window_frames: int = SegmentConfig().segment_frames,
) -> DecodedSong:  # fmt: skip
    """Phase one: decode, downmix and resample the whole song into a spool file.

    The song is measured on the way, in windows of `window_frames` (the segment length).
    """
    extension = song.source.rsplit(".", 1)[-1].lower() if "." in song.source else ""
    handle, spool_path = tempfile.mkstemp(dir=scratch_dir, suffix=".f32")
    try:
        with (
            os.fdopen(handle, "wb") as spool,
            local_copy(song.source, storage, scratch_dir) as local_path,
            open_audio(local_path, extension) as stream,
        ):
            source_sha256 = song.source_sha256 or _file_sha256(local_path)
            meter = SongMeter(stream.info.sample_rate, stream.info.channels, window_frames)
            counted = _counting(meter.source(stream.blocks))
            frames = 0
            for block in stereo_48k(counted, stream.info.sample_rate):
                spool.write(np.ascontiguousarray(block, dtype=np.float32).data)
                meter.resampled(block)
                frames += len(block)
            meter.close()
            info = stream.info
    except FileNotFoundError as error:
        os.remove(spool_path)
        raise DecodeError(f"unreadable: file not found: {error}") from None
    except PermissionError as error:
        os.remove(spool_path)
        raise DecodeError(f"unreadable: permission denied: {error}") from None
    except BaseException:
        os.remove(spool_path)
        raise
    return DecodedSong(
        song=song,
        info=info,
        spool_path=spool_path,
        frames=frames,
        source_frames=counted.total,
        peak=meter.peak,
        lyrics=lyrics,
        source_sha256=source_sha256,
        meter=meter,
    )


def _file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class _counting:
    """Pass blocks through, counting source frames (streams need not declare a length)."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self._blocks = blocks
        self.total = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self._blocks:
            self.total += len(block)
            yield block


def encode_samples(
    decoded: DecodedSong, spans: list[SegmentSpan], quality: SongQuality, flac_level: float
) -> Iterator[Sample]:
    """Phase two: segment audio (gain applied, 16-bit FLAC), metadata and lyrics per span.

    `spans` are the segments kept; `quality` holds their measures and the song's.
    """
    gain = decoded.gain
    with open(decoded.spool_path, "rb") as spool:
        for span in spans:
            yield _encode_span(decoded, spool, span, len(spans), gain, flac_level, quality)


def _encode_span(
    decoded: DecodedSong, spool, span: SegmentSpan, count: int, gain: float, flac_level: float,
    quality: SongQuality,
) -> Sample:  # fmt: skip
    # Plain reads, not a memmap: mapped pages would all count towards the worker's RSS.
    spool.seek(span.start * _SPOOL_FRAME_BYTES)
    segment = np.fromfile(spool, dtype=np.float32, count=span.frames * 2).reshape(-1, 2)
    if gain != 1.0:
        segment *= np.float32(gain)
    pcm = to_pcm16(segment)
    if span.stored_frames > span.frames:
        pcm = np.concatenate([pcm, np.zeros((span.stored_frames - span.frames, 2), np.int16)])
    key = segment_key(decoded.song.song_id, span.index)
    metadata = _metadata(decoded, span, count, key, gain)
    metadata["quality"] = quality.segments[span.index]
    metadata["song_quality"] = quality.song
    validate_sample_metadata(metadata)
    return Sample(
        key=key,
        members=(
            ("flac", _flac_bytes(pcm, flac_level)),
            ("json", json_bytes(json.dumps(metadata, ensure_ascii=False, sort_keys=True))),
            ("txt", _segment_text(decoded.lyrics, metadata["lyrics"]).encode()),
        ),
    )


def _flac_bytes(pcm: np.ndarray, level: float) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, pcm, TARGET_RATE, format="FLAC", subtype="PCM_16", compression_level=level)
    return buffer.getvalue()


def _metadata(decoded: DecodedSong, span: SegmentSpan, count: int, key: str, gain: float) -> dict:
    song = decoded.song
    start_s = span.start / TARGET_RATE
    end_s = (span.start + span.frames) / TARGET_RATE
    lines = lines_in_window(decoded.lyrics, start_s, end_s) if decoded.lyrics.aligned else []
    metadata = {
        "schema_version": SHARD_SAMPLE_SCHEMA_VERSION,
        "key": key,
        "song_id": song.song_id,
        "source": song.source,
        "source_sha256": decoded.source_sha256,
        "segment_index": span.index,
        "song_segments": count,
        "start_s": start_s,
        "duration_s": span.frames / TARGET_RATE,
        "padding_s": (span.stored_frames - span.frames) / TARGET_RATE,
        "sample_rate": TARGET_RATE,
        "channels": 2,
        "source_sample_rate": decoded.info.sample_rate,
        "source_channels": decoded.info.channels,
        "source_duration_s": decoded.source_duration_s,
        "source_codec": decoded.info.codec,
        "duration_evidence": decoded.info.declared.evidence,
        "lyrics_aligned": decoded.lyrics.aligned,
        "lyrics": [{"t": line.t, "text": line.text} for line in lines],
        "song_peak": decoded.peak,
        "gain": gain,
        "split": song.split or "train",
        "duplicate_group": song.duplicate_group,
    }
    if song.title:
        metadata["title"] = song.title
    if song.artist:
        metadata["artist"] = song.artist
    if song.album:
        metadata["album"] = song.album
    return metadata


def _segment_text(lyrics: Lyrics, lines: list[dict]) -> str:
    """The `.txt` member: the segment's aligned lines, or the whole plain text."""
    if lyrics.aligned:
        return "\n".join(line["text"] for line in lines)
    return lyrics.text
