"""Tokenize prepared shards into MuCodec token Parquet tables on GPU (or CPU) actors.

Example:
    python -m jobs.tokenize --shards ./prepared --output ./tokens --checkpoint ./mucodec-ckpt
    python -m jobs.tokenize --shards ./prepared --output ./tokens --config tiny   # test model
    python -m jobs.tokenize --shards s3://bucket/prepared --output s3://bucket/tokens \\
        --checkpoint /models/mucodec --dtype bfloat16 --address auto

--checkpoint takes our converted checkpoint (see `python -m jobs.convert_checkpoint`) or the
official files; --config builds a preset with seeded random weights (tests, benchmarks).
Rerunning with the same --output finishes only what is missing.
"""

from __future__ import annotations

import argparse

from jobs.cli import (
    JobParser,
    add_ray_arguments,
    add_storage_arguments,
    main_entry,
    positive_int,
    require_input,
    start_job,
    storage_from_args,
)
from jobs.console import StageOutcome, print_outcomes, run_stage
from mucodec.encoder.config import PRESETS
from pipeline.tokenize.actor import TokenizerSpec
from pipeline.tokenize.stage import TokenizeConfig, TokenizeSummary, tokenize_shards


def add_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    """The tokenizer options (shared with jobs.run)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        help="tokenizer checkpoint: our converted directory (python -m jobs.convert_checkpoint) "
        "or the official files; the released weights are in the official MuCodec repository "
        "(see docs/tokenizer.md)",
    )
    source.add_argument(
        "--config",
        choices=sorted(PRESETS),
        help="a model preset with seeded random weights, for tests and benchmarks "
        f"({', '.join(sorted(PRESETS))})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16 autocast on GPU (default: float32, bit-faithful)",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="segments per actor call"
    )
    parser.add_argument(
        "--actors",
        type=positive_int,
        help="actor pool size (default: one per GPU, else one per 2 CPUs)",
    )
    parser.add_argument(
        "--shards-per-part",
        type=positive_int,
        default=16,
        help="input shards per output Parquet file",
    )
    parser.add_argument(
        "--row-group-size",
        type=positive_int,
        default=1024,
        help="token rows per Parquet row group: smaller groups let readers skip more "
        "(default: 1024)",
    )


def tokenize_config_from_args(args: argparse.Namespace) -> TokenizeConfig:
    """The stage's config from parsed arguments (raises ValueError on a bad combination)."""
    return TokenizeConfig(
        tokenizer=TokenizerSpec(
            checkpoint=args.checkpoint, preset=args.config, seed=args.seed, dtype=args.dtype
        ),
        batch_size=args.batch_size,
        actors=args.actors,
        shards_per_part=args.shards_per_part,
        row_group_size=args.row_group_size,
        storage=storage_from_args(args),
    )


def check_tokenizer_usage(args: argparse.Namespace) -> None:
    """Refuse a tokenizer that cannot load before Ray starts."""
    tokenize_config_from_args(args)
    if args.checkpoint:
        require_input(args.checkpoint, "--checkpoint", storage_from_args(args))


def build_parser() -> JobParser:
    """The job's argument parser."""
    parser = JobParser("python -m jobs.tokenize", __doc__)
    parser.add_argument(
        "--shards", required=True, help="prepare output URL (or a directory of .tar shards)"
    )
    parser.add_argument("--output", required=True, help="output URL for the token tables")
    add_tokenizer_arguments(parser)
    add_storage_arguments(parser)
    add_ray_arguments(parser)
    parser.add_argument(
        "--force", action="store_true", help="replace an output that holds a different run"
    )
    return parser


def run_tokenize(args: argparse.Namespace, shards_url: str, output_url: str) -> StageOutcome:
    """Run the stage with a progress bar over segments; return its row of the summary."""
    config = tokenize_config_from_args(args)

    def work(bar) -> TokenizeSummary:
        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return tokenize_shards(shards_url, output_url, config, force=args.force,
                               progress=progress)  # fmt: skip

    return run_stage(
        "tokenize", "segment", work,
        lambda s: (f"{s.parts_unfinished} of {s.parts} parts unfinished"
                   if s.parts_unfinished else None),
        lambda s, status: tokenize_outcome(s, status, output_url),
    )  # fmt: skip


def tokenize_outcome(summary: TokenizeSummary, status: int, output_url: str) -> StageOutcome:
    """The stage's row of the printed summary."""
    return StageOutcome(
        "tokenize", status,
        f"{summary.segments:,} segments, {summary.tokens:,} tokens, "
        f"{summary.audio_hours:,.2f} h ({summary.audio_hours_per_hour:,.1f} h/h on "
        f"{summary.actors} {summary.device} actors)",
        summary.rejects, summary.wall_seconds, output_url,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit status."""
    args = build_parser().parse_args(argv)
    check_tokenizer_usage(args)
    require_input(args.shards, "--shards", storage_from_args(args))
    start_job(args)
    outcome = run_tokenize(args, args.shards, args.output)
    print_outcomes([outcome])
    return outcome.status


if __name__ == "__main__":
    main_entry(main)
