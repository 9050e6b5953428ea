"""Run the whole pipeline: prepare, tokenize, then spotcheck, into one output root.

Example:
    python -m jobs.run --input ./catalog --output ./run --checkpoint ./mucodec-ckpt
    python -m jobs.run --input ./catalog --output ./run --config tiny
    python -m jobs.run --input ./catalog --output ./run --codec mucodec,dac,encodec --config tiny

Writes <output>/prepared (shards), <output>/tokens/<codec> (one token table per codec of
--codec, with jobs.tokenize's options; the spot-check gets the same codec list as
`args.codecs`) and, when a decoder is
given (--decoder-checkpoint, --official-mucodec/--official-audioldm or --decoder-config),
<output>/spotcheck (WAVs, metrics, report.html). Every stage resumes, so rerunning the same
command after a crash finishes only what is missing.
"""

from __future__ import annotations

import argparse

from jobs import prepare, spotcheck, tokenize
from jobs.cli import JobParser, main_entry, start_job
from jobs.console import StageOutcome, print_outcomes
from pipeline.io import join

# Segments decoded when a decoder is given without --count or --fraction.
DEFAULT_SPOTCHECK_COUNT = 8


def build_parser() -> JobParser:
    """The run job's command line: prepare's, the tokenizer's and the spot-check's options."""
    parser = prepare.build_parser()
    parser.prog = "python -m jobs.run"
    parser.description = __doc__
    tokenize.add_tokenizer_arguments(parser)
    spotcheck.add_spotcheck_arguments(parser, required=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs prepare, tokenize and (given a sample or a decoder) spotcheck, in turn.

    Args:
        argv: The command line after `python -m jobs.run`; None reads `sys.argv`.

    Returns:
        The exit status: 0, or the first failing stage's.
    """
    args = build_parser().parse_args(argv)
    prepare.check_usage(args)
    tokenize.check_tokenizer_usage(args)
    if spotcheck.spotcheck_asked(args):
        if args.count is None and args.fraction is None:
            args.count = DEFAULT_SPOTCHECK_COUNT
        spotcheck.check_spotcheck_usage(args)
    start_job(args)
    outcomes = run_stages(args)
    print_outcomes(outcomes)
    return next((o.status for o in outcomes if o.status), 0)


def run_stages(args: argparse.Namespace) -> list[StageOutcome]:
    """Each stage in turn, stopping at the first that fails."""
    prepared, tokens = join(args.output, "prepared"), join(args.output, "tokens")
    outcomes = [prepare.run_prepare(args, args.input, prepared)]
    if outcomes[-1].status:
        return outcomes
    outcomes.append(tokenize.run_tokenize(args, prepared, tokens))
    if outcomes[-1].status or not spotcheck.spotcheck_asked(args):
        return outcomes
    output = join(args.output, "spotcheck")
    outcomes.append(spotcheck.run_spotcheck(args, tokens, prepared, output))
    return outcomes


if __name__ == "__main__":
    main_entry(main)
