"""Export token tables for a loader: Lhotse Shar or Hugging Face datasets.

Example:
    python -m jobs.export --tokens ./run/tokens/mucodec --tokens ./run/tokens/dac \\
        --format lhotse-shar --output ./export/shar
    python -m jobs.export --tokens ./run/tokens --codec mucodec --format hf-datasets \\
        --output ./export/hf

Several codecs go into one export (each its own codes field, every lyric line on each
codec's frames); their tables must come from one tokenize run (the same parts). A rerun
resumes a killed export; --force replaces an output that holds another export. The
formats' libraries are package extras: `pip install 'mucodec-pipeline[lhotse]'` or `[hf]`.
See docs/reading-tokens.md for reading the exports in a training loop.
"""

from __future__ import annotations

import argparse
import os

from core.errors import UsageError
from jobs.cli import JobParser, add_storage_arguments, main_entry, require_input, storage_from_args
from jobs.console import StageOutcome, print_outcomes, run_stage
from pipeline.export.formats import FORMATS, export_format
from pipeline.export.stage import ExportSummary, export_tokens


def build_parser() -> JobParser:
    """The job's argument parser."""
    parser = JobParser("python -m jobs.export", __doc__)
    parser.add_argument("--tokens", action="append", required=True, metavar="URL",
                        help="a codec's token table (<tokenize output>/<codec>), or a tokenize "
                        "output with --codec; repeatable")  # fmt: skip
    parser.add_argument("--codec", help="comma-separated codecs of a tokenize output --tokens")
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--output", required=True, help="a local directory")
    parser.add_argument("--audio", metavar="URL",
                        help="prepare's output: each segment's audio goes into the export too "
                        "(lhotse-shar)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="replace another export there")
    add_storage_arguments(parser)
    return parser


def tokens_by_codec(args: argparse.Namespace) -> dict[str, str]:
    """Codec name -> its table, from --tokens (and --codec).

    Raises:
        UsageError: a codec twice, or --codec with several --tokens.
    """
    if args.codec:
        if len(args.tokens) != 1:
            raise UsageError("--codec takes one --tokens: the tokenize output holding them")
        names = [name.strip() for name in args.codec.split(",") if name.strip()]
        tokens = {name: args.tokens[0] for name in names}
    else:
        tokens = {os.path.basename(url.rstrip("/")): url for url in args.tokens}
    if len(tokens) != len(args.tokens) and not args.codec:
        raise UsageError(f"--tokens: each codec once: {args.tokens}")
    return tokens


def main(argv: list[str] | None = None) -> int:
    """Run the export; returns the exit status."""
    args = build_parser().parse_args(argv)
    storage = storage_from_args(args)
    export_format(args.format)  # A missing library is one error line, before any work.
    tokens = tokens_by_codec(args)
    for url in set(tokens.values()):
        require_input(url, "--tokens", storage)
    if args.audio:
        require_input(args.audio, "--audio", storage)

    def work(bar) -> ExportSummary:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return export_tokens(tokens, args.output, args.format, audio=args.audio,
                             storage=storage, force=args.force, progress=progress)  # fmt: skip

    def outcome(summary: ExportSummary, status: int) -> StageOutcome:
        result = (f"{summary.samples:,} segments of {', '.join(summary.codecs)} as "
                  f"{summary.format}, {summary.parts} parts ({summary.parts_already_done} "
                  f"already done)")  # fmt: skip
        return StageOutcome("export", status, result, summary.left_out, summary.wall_seconds,
                            args.output)  # fmt: skip

    result = run_stage("export", "part", work, lambda summary: None, outcome)
    print_outcomes([result])
    return result.status


if __name__ == "__main__":
    main_entry(main)
