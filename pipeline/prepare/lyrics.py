"""Lyrics: robust text decoding, LRC parsing, and alignment of lines to segments.

LRC files in the wild carry metadata tags (`[ar:...]`), a global `[offset:+/-ms]`, several
timestamps on one line (`[00:12.00][01:02.00]chorus`), lines out of order, enhanced word tags
(`<00:12.50>`), and whatever encoding the tagger used. Nothing here raises on bad text: a line
that cannot be parsed is kept as plain text or dropped, never fatal.
"""

from __future__ import annotations

import codecs
import contextlib
import re
from dataclasses import dataclass

# Without a BOM: utf-8 is strict and self-validating, so it goes first. gb18030 (Chinese
# catalogs) and cp1252 (Western taggers) both accept most byte strings, so gb18030 wins only
# when its reading looks like Chinese; latin-1 is the last resort and never fails.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_TIME_TAG = re.compile(r"\[(\d{1,3}):(\d{1,2})(?:[.:](\d{1,3}))?\]")
_META_TAG = re.compile(r"^\[([A-Za-z#]+):(.*)\]\s*$")
_WORD_TAG = re.compile(r"<\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?>")


@dataclass(frozen=True)
class LyricLine:
    """One sung line; `t` is seconds from the start of the song (or of a segment)."""

    t: float
    text: str


@dataclass(frozen=True)
class Lyrics:
    """A song's lyrics: time-aligned lines (LRC) or one unaligned block (plain text)."""

    aligned: bool
    lines: tuple[LyricLine, ...] = ()
    text: str = ""

    @property
    def is_empty(self) -> bool:
        """True when there are neither timed lines nor any text."""
        return not self.lines and not self.text.strip()


NO_LYRICS = Lyrics(aligned=False)


def decode_text(data: bytes) -> str:
    """Decode lyrics bytes: honour a BOM, else try strict encodings in a fixed order."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    if len(data) >= 4 and data.count(0) > len(data) // 4:
        # BOM-less UTF-16: every other byte of ASCII text is NUL.
        encoding = "utf-16-le" if data[1] == 0 else "utf-16-be"
        return data.decode(encoding, errors="replace")
    for encoding in ("utf-8", "gb18030", "cp1252"):
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if encoding != "gb18030" or _reads_as_chinese(text):
            return text
    return data.decode("latin-1")


def _reads_as_chinese(text: str) -> bool:
    """Whether `text`, decoded as gb18030, reads as Chinese rather than misread Western text.

    Western text misread as gb18030 gives CJK characters glued to Latin letters ("cr?me",
    an accent byte paired with the next letter); real Chinese lyrics rarely do.
    """
    cjk = [i for i, char in enumerate(text) if "\u3400" <= char <= "\u9fff"]
    if len(cjk) < 2:
        return False

    def latin(i: int) -> bool:
        return 0 <= i < len(text) and text[i].isascii() and text[i].isalpha()

    glued = sum(1 for i in cjk if latin(i - 1) or latin(i + 1))
    return glued * 2 <= len(cjk)


def _timestamp_seconds(minutes: str, seconds: str, fraction: str | None) -> float:
    frac = 0.0
    if fraction:
        # "[mm:ss.x]" is tenths, ".xx" hundredths, ".xxx" milliseconds.
        frac = int(fraction) / (10 ** len(fraction))
    return int(minutes) * 60 + int(seconds) + frac


def looks_like_lrc(text: str) -> bool:
    """True if any line starts with an LRC time tag."""
    return any(_TIME_TAG.match(line.strip()) for line in text.splitlines())


def parse_lrc(text: str) -> Lyrics:
    """Parse LRC text into sorted, offset-corrected lines.

    `[offset:N]` is in milliseconds; a positive offset makes lyrics appear sooner, so it is
    subtracted. Times that the offset pushes below zero clamp to 0. Lines with no text (timing
    markers for instrumental gaps) are dropped.
    """
    offset_s = 0.0
    timed: list[tuple[float, int, str]] = []
    for order, raw_line in enumerate(text.splitlines()):
        line = raw_line.strip()
        meta = _META_TAG.match(line)
        if meta and not _TIME_TAG.match(line):
            if meta.group(1).lower() == "offset":
                # A malformed offset is ignored rather than fatal.
                with contextlib.suppress(ValueError):
                    offset_s = float(meta.group(2).strip()) / 1000.0
            continue
        stamps: list[float] = []
        rest = line
        while match := _TIME_TAG.match(rest):
            stamps.append(_timestamp_seconds(*match.groups()))
            rest = rest[match.end() :]
        lyric = _WORD_TAG.sub("", rest).strip()
        if stamps and lyric:
            timed.extend((stamp, order, lyric) for stamp in stamps)
    # Sort by time; ties keep file order so duplicate timestamps stay stable.
    timed.sort(key=lambda item: (item[0], item[1]))
    lines = tuple(LyricLine(t=max(0.0, stamp - offset_s), text=lyric) for stamp, _, lyric in timed)
    return Lyrics(aligned=True, lines=lines)


def parse_lyrics(text: str) -> Lyrics:
    """LRC if the text carries time tags, else plain unaligned text."""
    if looks_like_lrc(text):
        parsed = parse_lrc(text)
        if parsed.lines:
            return parsed
    plain = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return Lyrics(aligned=False, text=plain) if plain else NO_LYRICS


def lines_in_window(lyrics: Lyrics, start_s: float, end_s: float) -> list[LyricLine]:
    """Lines starting in [start_s, end_s), with times relative to start_s (ms precision)."""
    return [
        LyricLine(t=round(line.t - start_s, 3), text=line.text)
        for line in lyrics.lines
        if start_s <= line.t < end_s
    ]
