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
import json
import sys

from tqdm import tqdm

from jobs.cli import (
    USAGE_ERRORS,
    add_ray_arguments,
    add_storage_arguments,
    start_job,
    storage_from_args,
)
from pipeline.tokenize import TokenizeConfig, tokenize_shards
from pipeline.tokenize_actor import TokenizerSpec


def add_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="tokenizer checkpoint (ours or official)")
    source.add_argument("--config", help="config preset with random weights (e.g. tiny)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16 autocast on GPU (default: float32, bit-faithful)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="segments per actor call")
    parser.add_argument(
        "--actors", type=int, help="actor pool size (default: one per GPU, else one per 2 CPUs)"
    )
    parser.add_argument(
        "--shards-per-part", type=int, default=16, help="input shards per output Parquet file"
    )
    parser.add_argument("--row-group-size", type=int, default=1024)  # fmt: skip


def tokenize_config_from_args(args: argparse.Namespace) -> TokenizeConfig:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.tokenize", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--shards", required=True, help="prepare output URL (or a dir of .tar)")
    parser.add_argument("--output", required=True, help="output URL for the token tables")
    add_tokenizer_arguments(parser)
    add_storage_arguments(parser)
    add_ray_arguments(parser)
    parser.add_argument("--force", action="store_true", help="replace a different run's output")
    return parser


def run_tokenize(args: argparse.Namespace, shards_url: str, output_url: str) -> int:
    config = tokenize_config_from_args(args)
    bar = tqdm(desc="tokenize parts", unit="part", total=0, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        summary = tokenize_shards(shards_url, output_url, config, force=args.force,
                                  progress=progress)  # fmt: skip
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(json.dumps(summary.to_json(), indent=2))
    return 1 if summary.parts_unfinished else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start_job(args)
    return run_tokenize(args, args.shards, args.output)


if __name__ == "__main__":
    raise SystemExit(main())
