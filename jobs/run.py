"""Run the whole pipeline: prepare, then tokenize, into one output root.

Example:
    python -m jobs.run --input ./catalog --output ./run --checkpoint ./mucodec-ckpt
    python -m jobs.run --input ./catalog --output ./run --config tiny

Writes <output>/prepared (shards), <output>/tokens (token tables) and, when a decoder is
given (--decoder-checkpoint, --official-mucodec/--official-audioldm or --decoder-config),
<output>/spotcheck (WAVs, metrics, report.html). Every stage resumes, so rerunning the same
command after a crash finishes only what is missing.
"""

from __future__ import annotations

import argparse

from jobs import prepare, spotcheck, tokenize
from jobs.cli import start_job
from pipeline.io import join


def build_parser() -> argparse.ArgumentParser:
    parser = prepare.build_parser()
    parser.prog = "python -m jobs.run"
    parser.description = __doc__
    tokenize.add_tokenizer_arguments(parser)
    spotcheck.add_spotcheck_arguments(parser, required=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start_job(args)
    prepared_url = join(args.output, "prepared")
    status = prepare.run_prepare(args, args.input, prepared_url)
    if status:
        return status
    tokens_url = join(args.output, "tokens")
    status = tokenize.run_tokenize(args, prepared_url, tokens_url)
    decoder_given = args.decoder_checkpoint or args.official_mucodec or args.decoder_config
    if status or not decoder_given:
        return status
    if args.count is None and args.fraction is None:
        args.count = 8
    return spotcheck.run_spotcheck(args, tokens_url, prepared_url, join(args.output, "spotcheck"))


if __name__ == "__main__":
    raise SystemExit(main())
