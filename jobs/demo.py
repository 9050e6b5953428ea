"""Generate the demo corpus and run the pipeline on it.

    python -m jobs.demo                       # corpus in ./demo-corpus, output in ./demo-output
    python -m jobs.demo --checkpoint ./mucodec-ckpt   # real MuCodec weights
    python -m jobs.demo --corpus-only --scale 4 --corpus /tmp/bigger

Without --checkpoint the tokenizer and decoder are the `tiny` presets with seeded random
weights (no weights can be downloaded here): real MuCodec computation, meaningless sound.

The corpus is a handful of synthetic songs in different containers, sample rates, bit depths
and channel layouts, with LRC (several flavours) and plain-text lyrics, plus two bad files
that must land in the rejects table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jobs.cli import JobParser, main_entry, positive_float
from pipeline.synth import synth_song, write_audio


@dataclass(frozen=True)
class DemoSong:
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


def make_demo_corpus(root: str, scale: float = 1.0) -> list[str]:
    """Write the demo corpus under `root`; durations are multiplied by `scale`."""
    written = []
    for seed, song in enumerate(DEMO_SONGS):
        path = os.path.join(root, song.path)
        seconds = song.seconds * scale if song.seconds > 10 else song.seconds
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


def build_parser() -> JobParser:
    parser = JobParser("python -m jobs.demo", __doc__)
    parser.add_argument(
        "--corpus", default="demo-corpus", help="where to write the corpus (default: demo-corpus)"
    )
    parser.add_argument(
        "--output", default="demo-output", help="where the pipeline writes (default: demo-output)"
    )
    parser.add_argument(
        "--scale", type=positive_float, default=1.0, help="multiply song durations (default: 1)"
    )
    parser.add_argument("--corpus-only", action="store_true", help="only write the corpus")
    parser.add_argument("--checkpoint", help="tokenizer checkpoint (default: tiny random weights)")
    parser.add_argument("--decoder-checkpoint", help="decoder checkpoint (with --checkpoint)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    make_demo_corpus(args.corpus, args.scale)
    print(f"demo corpus written to {args.corpus}")
    if args.corpus_only:
        return 0
    from jobs import run

    if args.checkpoint:
        models = ["--checkpoint", args.checkpoint]
        if args.decoder_checkpoint:
            models += ["--decoder-checkpoint", args.decoder_checkpoint]
    else:
        models = ["--config", "tiny", "--decoder-config", "tiny", "--steps", "8"]
    return run.main(["--input", args.corpus, "--output", args.output, "--count", "2", *models])


if __name__ == "__main__":
    main_entry(main)
