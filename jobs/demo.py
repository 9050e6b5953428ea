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

import torch

from audio_codecs import registry
from jobs.cli import JobParser, main_entry, positive_float, positive_int
from testing.demo_corpus import make_demo_corpus

CPU_DECODER_WINDOW = 128  # Codes (5.12 s): the spot-check on a CPU in seconds, not minutes.


def build_parser() -> JobParser:
    """The demo's command line."""
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
    parser.add_argument(
        "--codec",
        default=registry.DEFAULT_CODEC,
        help=f"comma-separated codecs to run (default: {registry.DEFAULT_CODEC})",
    )
    parser.add_argument(
        "--checkpoint", help="MuCodec tokenizer checkpoint (default: tiny random weights)"
    )
    parser.add_argument("--decoder-checkpoint", help="decoder checkpoint (with --checkpoint)")
    parser.add_argument(
        "--decoder-window",
        type=positive_int,
        metavar="CODES",
        help="decoder window of the spot-check in codes (default: 1024 on a GPU; on a CPU "
        f"{CPU_DECODER_WINDOW}, as the decoder renders whole windows and a full one takes "
        "minutes there)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Writes the demo corpus, then runs the whole pipeline on it (`jobs.run`).

    Args:
        argv: The command line after `python -m jobs.demo`; None reads `sys.argv`.

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)
    make_demo_corpus(args.corpus, args.scale)
    print(f"demo corpus written to {args.corpus}")
    if args.corpus_only:
        return 0
    from jobs import run

    # Codecs without a checkpoint run their `tiny` preset (with --checkpoint: all but MuCodec).
    models = ["--codec", args.codec, "--config", "tiny"]
    if args.checkpoint:
        models += ["--checkpoint", f"{registry.DEFAULT_CODEC}={args.checkpoint}"]
        if args.decoder_checkpoint:
            models += ["--decoder-checkpoint", args.decoder_checkpoint]
    else:
        models += ["--decoder-config", "tiny", "--steps", "8"]
    window = args.decoder_window or (None if torch.cuda.is_available() else CPU_DECODER_WINDOW)
    if window:
        models += ["--decoder-window", str(window)]
    return run.main(["--input", args.corpus, "--output", args.output, "--count", "2", *models])


if __name__ == "__main__":
    main_entry(main)
