"""Prepare a song catalog into 48 kHz stereo WebDataset shards with aligned lyrics.

Example:
    python -m jobs.prepare --input ./catalog --output ./prepared
    python -m jobs.prepare --input s3://bucket/catalog --output s3://bucket/prepared \\
        --s3-endpoint-url http://minio:9000 --address auto

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
from pipeline.prepare import prepare_corpus
from pipeline.segment import TAIL_POLICIES, SegmentConfig
from pipeline.shards import ShardLimits
from pipeline.unit import PrepareConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.prepare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="corpus directory/prefix URL or manifest")
    parser.add_argument("--output", required=True, help="output URL (local path, s3://...)")
    parser.add_argument("--segment-seconds", type=float, default=35.84)
    parser.add_argument(
        "--tail",
        choices=TAIL_POLICIES,
        default="keep",
        help="what to do with the final partial segment (default: keep)",
    )
    parser.add_argument(
        "--min-tail-seconds",
        type=float,
        default=10.0,
        help="a shorter final partial segment is dropped (default: 10)",
    )
    parser.add_argument("--shard-max-samples", type=int, default=100_000)
    parser.add_argument(
        "--shard-max-bytes",
        type=float,
        default=1e9,
        help="roll over to a new shard past this size (default: 1e9)",
    )
    parser.add_argument(
        "--songs-per-unit",
        type=int,
        default=32,
        help="songs per unit of work (restart granularity)",
    )
    parser.add_argument("--flac-level", type=int, default=5, choices=range(9), metavar="0-8")
    parser.add_argument("--scratch-dir", help="local directory for temporary files")
    add_storage_arguments(parser)
    add_ray_arguments(parser)
    parser.add_argument("--concurrency", type=int, help="units processed at once")
    parser.add_argument(
        "--force", action="store_true", help="replace an output that holds a different run"
    )
    return parser  # fmt: skip


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    return PrepareConfig(
        segment=SegmentConfig(args.segment_seconds, args.tail, args.min_tail_seconds),
        shard_limits=ShardLimits(args.shard_max_samples, int(args.shard_max_bytes)),
        songs_per_unit=args.songs_per_unit,
        flac_level=args.flac_level,
        scratch_dir=args.scratch_dir,
        storage=storage_from_args(args),
    )


def run_prepare(args: argparse.Namespace, input_url: str, output_url: str) -> int:
    """Run the stage with a progress bar; print the summary; return the exit status."""
    bar = tqdm(desc="prepare units", unit="unit", total=0, dynamic_ncols=True)

    def progress(finished: int, total: int, result) -> None:
        bar.total = total
        if result is not None:
            bar.set_postfix(segments=result.segments, rejects=len(result.rejects))
        bar.update(1)

    try:
        summary = prepare_corpus(
            input_url, output_url, config_from_args(args),
            concurrency=args.concurrency, force=args.force, progress=progress,
        )  # fmt: skip
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        bar.close()
    print(json.dumps(summary.to_json(), indent=2))
    if summary.units_failed:
        print("error: some units failed; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start_job(args)
    return run_prepare(args, args.input, args.output)


if __name__ == "__main__":
    raise SystemExit(main())
