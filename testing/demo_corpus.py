"""The demo corpus: synthetic songs in many containers, rates and layouts, with lyrics.

Used by `python -m jobs.demo`, the benchmarks and the tests. Each song is generated from its
index as seed, so the corpus is the same on every machine. Two inputs are bad on purpose: a
song too short for one segment and an mp3 of noise, both must land in the rejects table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.prepare.segment import SegmentConfig, plan_segments
from testing.synth import synth_song, write_audio


@dataclass(frozen=True)
class DemoSong:
    """One song of the demo corpus: where it goes, how long it is and how it is encoded.

    `subtype` is libsndfile's (None lets the container choose); `peak` above 1 makes a song
    that clips in float; `lyrics` is "lrc", "lrc-bom-offset", "lrc-cp1252", "txt" or None.
    """

    path: str
    seconds: float
    sample_rate: int
    channels: int
    subtype: str | None = None
    peak: float = 0.7
    lyrics: str | None = None  # "lrc", "lrc-bom-offset", "lrc-cp1252" or "txt"


DEMO_SONGS = (
    DemoSong("Artist A/First Light.wav", 80.0, 44_100, 2, "PCM_16", lyrics="lrc"),
    DemoSong("Artist A/second song.flac", 50.0, 96_000, 1, "PCM_24", lyrics="txt"),
    DemoSong("Artist B/long_take.ogg", 110.0, 22_050, 2, "VORBIS", lyrics="lrc-bom-offset"),
    DemoSong("Artist B/surround.m4a", 40.0, 48_000, 6, lyrics="lrc-cp1252"),
    DemoSong("Artist C/quiet.mp3", 75.0, 32_000, 1, "MPEG_LAYER_III"),
    DemoSong("Artist C/hot float.wav", 36.5, 48_000, 2, "FLOAT", peak=1.4, lyrics="lrc"),
    DemoSong("Artist C/lofi.wav", 45.0, 8_000, 1, "PCM_U8"),
    DemoSong("Artist D/tiny-intro.wav", 3.0, 48_000, 2, "PCM_16"),  # Too short: rejected.
)
BROKEN_FILE = "Artist D/broken.mp3"


def _lrc(seconds: float, flavour: str) -> str:
    lines = ["[ti:Demo]", "[ar:Synth]", "[length:00:00]"]
    if flavour == "lrc-bom-offset":
        lines.append("[offset:500]")  # Lyrics shown 0.5 s earlier than tagged.
    count = int(seconds // 6)
    # Out of order on purpose, with one line repeated at two times.
    for i in reversed(range(count)):
        minute, second = divmod(6 * i + 1.25, 60)
        lines.append(f"[{int(minute):02d}:{second:05.2f}]line {i + 1} café")
    lines.append("[00:03.00][00:33.00]chorus (twice)")
    lines.append(f"[{int(seconds // 60) + 5:02d}:00.00]past the end")
    return "\n".join(lines) + "\n"


def write_lyrics(audio_path: str, seconds: float, flavour: str) -> None:
    """Writes the lyrics sidecar of `audio_path` (same stem, .lrc or .txt) in `flavour`."""
    stem = audio_path.rsplit(".", 1)[0]
    if flavour == "txt":
        with open(f"{stem}.txt", "w", encoding="utf-8") as handle:
            handle.write("A plain verse\nwith no timing at all\n")
        return
    text = _lrc(seconds, flavour)
    if flavour == "lrc-bom-offset":
        data = "\ufeff".encode() + text.encode("utf-8")
    elif flavour == "lrc-cp1252":
        data = text.encode("cp1252")
    else:
        data = text.encode("utf-8")
    with open(f"{stem}.lrc", "wb") as handle:
        handle.write(data)


def scaled_seconds(song: DemoSong, scale: float) -> float:
    """How long `song` is in a corpus made at `scale` (the too-short song keeps its length)."""
    return song.seconds * scale if song.seconds > 10 else song.seconds


def demo_segments(scale: float, config: SegmentConfig | None = None) -> dict[str, int]:
    """Segments per song (corpus-relative path) of the corpus at `scale`.

    `config` is prepare's segmenting (default: the job's); a song with none is rejected.
    """
    config = config or SegmentConfig()
    return {
        song.path: len(plan_segments(round(scaled_seconds(song, scale) * 48_000), config))
        for song in DEMO_SONGS
    }


def make_demo_corpus(root: str, scale: float = 1.0) -> list[str]:
    """Write the demo corpus under `root`; durations are multiplied by `scale`."""
    written = []
    for seed, song in enumerate(DEMO_SONGS):
        path = os.path.join(root, song.path)
        seconds = scaled_seconds(song, scale)
        audio = synth_song(seconds, song.sample_rate, song.channels, seed, song.peak)
        write_audio(path, audio, song.sample_rate, song.subtype)
        if song.lyrics:
            write_lyrics(path, seconds, song.lyrics)
        written.append(path)
    broken = os.path.join(root, BROKEN_FILE)
    with open(broken, "wb") as handle:
        handle.write(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 8)
    written.append(broken)
    return written
