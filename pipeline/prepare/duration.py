"""Declared audio lengths, and whether they are exact enough to prove a file was cut short.

A file cut short (a broken download, a full disk) still decodes: the decoder stops early and
the song is simply shorter. Only a length declared elsewhere in the file shows the loss, and
only if it is exact. Each `DeclaredLength` carries its evidence, recorded in every segment's
metadata as `duration_evidence`:

| evidence          | where the length comes from                                    | exact |
|-------------------|----------------------------------------------------------------|-------|
| `wav-header`      | RIFF/RIFX `data` chunk size (RF64: `ds64`) / block align, PCM   | yes   |
| `aiff-header`     | AIFF/AIFC `COMM` sample frames (uncompressed)                   | yes   |
| `flac-streaminfo` | FLAC `STREAMINFO` total samples                                 | yes   |
| `mp3-xing`        | Xing/Info tag frames x samples per frame - LAME delay/padding  | yes   |
| `mp3-vbri`        | VBRI tag frames x samples per frame                             | yes   |
| `mp4-track`       | an MP4/M4A/MOV audio track's duration, as ffprobe reads it      | yes   |
| `ogg-granule`     | the last Ogg page's granule position, as the decoder reads it   | yes   |
| `container`       | another container's length field, as ffprobe reads it (Matroska) | yes   |
| `estimate`        | guessed from the bit rate: raw ADTS AAC, mp3 without a tag, ... | no    |
| `none`            | nothing declares a length (a WAV streamed with an unknown size) | no    |
|                   | or only libsndfile's count of the frames present (W64, CAF)     |       |

WAV, AIFF, FLAC and mp3 headers are parsed here (libsndfile shortens a cut WAV or AIFF to
the frames present, and its mp3 length is a guess unless tagged). Everything else is the
decoder's own reading (`Reported`): an estimate when ffprobe says it guessed, or when the
format is a raw bitstream that has no length field.

Formats: Xing/Info and LAME tags as LAME writes them (gabriel.mp3-tech.org/mp3infotag.html),
VBRI as Fraunhofer's encoder writes it (32 bytes after the frame header).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

# Exact evidence and how a rejection names it: a shortfall against these means lost audio.
EXACT_EVIDENCE = {
    "wav-header": "WAV header",
    "aiff-header": "AIFF header",
    "flac-streaminfo": "FLAC STREAMINFO",
    "mp3-xing": "mp3 Xing header",
    "mp3-vbri": "mp3 VBRI header",
    "mp4-track": "MP4 track header",
    "ogg-granule": "Ogg granule position",
    "container": "container",
}
ESTIMATE = "estimate"
NO_EVIDENCE = "none"
EVIDENCE_KINDS = (*EXACT_EVIDENCE, ESTIMATE, NO_EVIDENCE)

# Formats (ffprobe's or libsndfile's name, lower case) that are bare frames with no length
# field: any length they report was guessed from the bit rate, whichever tool reports it.
_RAW_STREAMS = frozenset({"aac", "mp3"})
_MP4 = "mov,mp4,m4a,3gp,3g2,mj2"  # ffprobe's name for the ISO/QuickTime demuxer.
_MP3_SCAN_BYTES = 64 * 1024  # The first mp3 frame must start this close to the tags.


@dataclass(frozen=True)
class DeclaredLength:
    """A length a file declares (None with evidence `none`) and what declares it."""

    evidence: str
    seconds: float | None

    @property
    def exact(self) -> bool:
        """Whether the evidence states the length exactly (not an estimate)."""
        return self.evidence in EXACT_EVIDENCE

    @property
    def source(self) -> str:
        """Who declares it, for reasons: e.g. "mp3 Xing header"."""
        return EXACT_EVIDENCE.get(self.evidence, self.evidence)


@dataclass(frozen=True)
class Reported:
    """A decoder's reading of a file: its format name, length, and whether it says it guessed."""

    format: str
    seconds: float | None
    estimated: bool = False
    # A count of the frames present rather than a declared length: libsndfile clamps a cut
    # W64 or CAF file's header to what is there, so it can never show a loss.
    counted: bool = False


def declared_length(local_path: str, reported: Reported) -> DeclaredLength:
    """The length the decoded audio is held to: a header parsed here, else `reported`."""
    with open(local_path, "rb") as handle:
        from_header = _header_length(handle)
    if from_header is not None:
        return from_header
    if reported.seconds is None or reported.counted:
        return DeclaredLength(NO_EVIDENCE, None)
    name = reported.format.lower()
    if reported.estimated or name in _RAW_STREAMS:
        return DeclaredLength(ESTIMATE, reported.seconds)
    evidence = {_MP4: "mp4-track", "ogg": "ogg-granule"}.get(name, "container")
    return DeclaredLength(evidence, reported.seconds)


def _header_length(handle: BinaryIO) -> DeclaredLength | None:
    """The length a WAV, AIFF, FLAC or mp3 header declares; None for other files."""
    start = _id3_end(handle)
    handle.seek(start)
    magic = handle.read(12)
    if start == 0 and magic[:4] in (b"RIFF", b"RIFX", b"RF64") and magic[8:] == b"WAVE":
        return _wav_length(handle, ">" if magic[:4] == b"RIFX" else "<")
    if start == 0 and magic[:4] == b"FORM" and magic[8:] in (b"AIFF", b"AIFC"):
        return _aiff_length(handle)
    if magic[:4] == b"fLaC":
        return _flac_length(handle, start + 4)
    if start > 0 or (len(magic) >= 2 and magic[0] == 0xFF and magic[1] & 0xE0 == 0xE0):
        return _mp3_length(handle, start)
    return None


def _id3_end(handle: BinaryIO) -> int:
    """Where the audio starts after any ID3v2 tags (mp3 and some FLAC files carry them)."""
    offset = 0
    while True:
        handle.seek(offset)
        header = handle.read(10)
        if len(header) < 10 or header[:3] != b"ID3" or any(b & 0x80 for b in header[6:10]):
            return offset
        size = sum(byte << 7 * (3 - i) for i, byte in enumerate(header[6:10]))  # Syncsafe.
        footer = 10 if header[5] & 0x10 else 0
        offset += 10 + size + footer


def _wav_length(handle: BinaryIO, order: str) -> DeclaredLength | None:
    """`data` chunk bytes / block align; RF64 keeps the real size in its `ds64` chunk.

    Streaming writers leave the size 0 or 0xFFFFFFFF (unknown): no evidence. Compressed WAV
    (ADPCM, mp3 in WAV) has no fixed block per frame: left to libsndfile.
    """
    rate = block_align = 0
    ds64_size = None
    while len(chunk := handle.read(8)) == 8:
        chunk_id, size = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
        if chunk_id == b"data":
            if size == 0xFFFFFFFF and ds64_size is not None:
                size = ds64_size
            if not (rate and block_align):
                return None
            if size in (0, 0xFFFFFFFF):
                return DeclaredLength(NO_EVIDENCE, None)
            return DeclaredLength("wav-header", size // block_align / rate)
        padded = size + (size & 1)  # Chunks are padded to even sizes.
        body = handle.read(min(padded, 64))
        handle.seek(padded - len(body), 1)
        if chunk_id == b"ds64" and len(body) >= 16:
            ds64_size = struct.unpack("<Q", body[8:16])[0]
        elif chunk_id == b"fmt " and len(body) >= 14:
            tag, _, rate = struct.unpack(order + "HHI", body[:8])
            block_align = struct.unpack(order + "H", body[12:14])[0]
            if tag not in (1, 3, 6, 7, 0xFFFE):  # PCM, float, A/mu-law, extensible.
                return None
    return None


def _aiff_length(handle: BinaryIO) -> DeclaredLength | None:
    """`COMM` sample frames at its 80-bit float rate; compressed AIFC counts packets instead."""
    while len(chunk := handle.read(8)) == 8:
        size = struct.unpack(">I", chunk[4:])[0]
        padded = size + (size & 1)
        if chunk[:4] != b"COMM":
            handle.seek(padded, 1)
            continue
        body = handle.read(padded)
        if len(body) < 18:
            return None
        frames = struct.unpack(">I", body[2:6])[0]
        exponent, mantissa = struct.unpack(">HQ", body[8:18])
        rate = mantissa * 2.0 ** ((exponent & 0x7FFF) - 16383 - 63)
        compression = body[18:22]
        if compression not in (b"", b"NONE", b"sowt", b"fl32", b"fl64", b"alaw", b"ulaw"):
            return None
        return DeclaredLength("aiff-header", frames / rate) if rate > 0 else None
    return None


def _flac_length(handle: BinaryIO, offset: int) -> DeclaredLength | None:
    """STREAMINFO (always the first metadata block): 20-bit rate, 36-bit total samples."""
    handle.seek(offset)
    block = handle.read(4 + 34)
    if len(block) < 38 or block[0] & 0x7F != 0:
        return None
    packed = int.from_bytes(block[4 + 10 : 4 + 18], "big")
    rate, total = packed >> 44, packed & ((1 << 36) - 1)
    if rate == 0:
        return None
    if total == 0:  # An encoder that could not seek back leaves it 0: unknown.
        return DeclaredLength(NO_EVIDENCE, None)
    return DeclaredLength("flac-streaminfo", total / rate)


# MPEG audio Layer III: kbit/s by bitrate index, for MPEG-1 and for MPEG-2/2.5.
_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG1_RATES = (44_100, 48_000, 32_000)


@dataclass(frozen=True)
class _Mp3Frame:
    sample_rate: int
    samples: int  # Per frame: 1152 (MPEG-1) or 576 (MPEG-2/2.5).
    length: int  # Bytes, header included.
    side_info: int  # Bytes between the header and where a Xing tag starts.


def _mp3_frame(header: bytes) -> _Mp3Frame | None:
    """Decode a 4-byte Layer III frame header; None when these bytes are not one."""
    if len(header) < 4:
        return None
    word = int.from_bytes(header, "big")
    version, layer = word >> 19 & 3, word >> 17 & 3  # version 3: MPEG-1, 2: MPEG-2, 0: 2.5.
    bitrate_index, rate_index = word >> 12 & 15, word >> 10 & 3
    if word >> 21 != 0x7FF or version == 1 or layer != 1:
        return None
    if bitrate_index in (0, 15) or rate_index == 3:
        return None
    mpeg1 = version == 3
    sample_rate = _MPEG1_RATES[rate_index] >> (0 if mpeg1 else 1 if version == 2 else 2)
    bitrate = _BITRATES[1 if mpeg1 else 2][bitrate_index] * 1000
    mono = word >> 6 & 3 == 3
    return _Mp3Frame(
        sample_rate=sample_rate,
        samples=1152 if mpeg1 else 576,
        length=(144 if mpeg1 else 72) * bitrate // sample_rate + (word >> 9 & 1),
        side_info=(17 if mono else 32) if mpeg1 else (9 if mono else 17),
    )


def _mp3_length(handle: BinaryIO, start: int) -> DeclaredLength | None:
    """The frame count a Xing/Info or VBRI tag in the first frame declares; None if untagged.

    The first header that a second header follows at the right distance is the first frame;
    a lone sync pattern before it (tag padding, junk) is skipped.
    """
    handle.seek(start)
    data = handle.read(_MP3_SCAN_BYTES)
    position = data.find(b"\xff")
    while 0 <= position < len(data) - 4:
        frame = _mp3_frame(data[position : position + 4])
        if frame is not None:
            tagged = _mp3_tag(data[position : position + frame.length], frame)
            if tagged is not None:
                return tagged
            following = _mp3_frame(data[position + frame.length : position + frame.length + 4])
            if following is not None and following.sample_rate == frame.sample_rate:
                return None
        position = data.find(b"\xff", position + 1)
    return None


def _mp3_tag(body: bytes, frame: _Mp3Frame) -> DeclaredLength | None:
    """Seconds from a Xing/Info tag (LAME delay and padding removed) or a VBRI tag."""
    xing = 4 + frame.side_info
    if body[xing : xing + 4] in (b"Xing", b"Info") and len(body) >= xing + 8:
        flags = struct.unpack(">I", body[xing + 4 : xing + 8])[0]
        if not flags & 1 or len(body) < xing + 12:  # No frame count: not a length.
            return None
        frames = struct.unpack(">I", body[xing + 8 : xing + 12])[0]
        # The LAME tag follows the optional byte count, table of contents and quality.
        lame = xing + 12 + (4 if flags & 2 else 0) + (100 if flags & 4 else 0)
        lame += 4 if flags & 8 else 0
        samples = frames * frame.samples
        # ffmpeg writes "Lavc"/"Lavf" where LAME writes "LAME"; the layout is the same.
        if body[lame : lame + 4] in (b"LAME", b"Lavc", b"Lavf") and len(body) >= lame + 24:
            gap = int.from_bytes(body[lame + 21 : lame + 24], "big")
            samples -= (gap >> 12) + (gap & 0xFFF)  # 12-bit encoder delay, 12-bit padding.
        return DeclaredLength("mp3-xing", max(samples, 0) / frame.sample_rate)
    if body[36:40] == b"VBRI" and len(body) >= 54:
        frames = struct.unpack(">I", body[50:54])[0]
        return DeclaredLength("mp3-vbri", frames * frame.samples / frame.sample_rate)
    return None
