"""Spot-check token tables: decode a reproducible sample back to audio, measure, report.

Example:
    python -m jobs.spotcheck --tokens ./run/tokens --shards ./run/prepared \\
        --output ./run/spotcheck --count 20 --decoder-checkpoint ./mucodec-decoder
    python -m jobs.spotcheck ... --fraction 0.01 \\
        --official-mucodec ckpt/mucodec.pt --official-audioldm ckpt/audioldm_48k.pth
    python -m jobs.spotcheck ... --count 4 --decoder-config tiny --steps 4   # random weights

Open <output>/report.html in a browser. Rerunning skips samples already decoded.
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.cli import (
    USAGE_ERRORS,
    add_ray_arguments,
    add_storage_arguments,
    start_job,
    storage_from_args,
)
from pipeline.spotcheck import SpotcheckConfig, spotcheck
from pipeline.spotcheck_actor import DecoderSpec


def add_spotcheck_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    amount = parser.add_mutually_exclusive_group(required=required)
    amount.add_argument("--count", type=int, help="number of segments to decode")
    amount.add_argument("--fraction", type=float, help="fraction of segments to decode")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the sample choice")
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument("--decoder-checkpoint", help="our converted decoder checkpoint")
    source.add_argument("--official-mucodec", help="official mucodec.pt (with --official-audioldm)")
    source.add_argument("--decoder-config", help="decoder preset with random weights (e.g. tiny)")
    parser.add_argument("--official-audioldm", help="official audioldm_48k.pth")
    parser.add_argument("--steps", type=int, default=50, help="flow-matching Euler steps")
    parser.add_argument("--guidance", type=float, default=1.5, help="classifier-free guidance")
    parser.add_argument(
        "--decoder-dtype", choices=("float32", "bfloat16", "float16"), default="float32"
    )
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--decode-batch-size", type=int, default=4)  # fmt: skip


def spotcheck_config_from_args(args: argparse.Namespace) -> SpotcheckConfig:
    spec = DecoderSpec(
        checkpoint=args.decoder_checkpoint,
        official_mucodec=args.official_mucodec,
        official_audioldm=args.official_audioldm,
        preset=args.decoder_config,
        steps=args.steps,
        guidance=args.guidance,
        dtype=args.decoder_dtype,
        noise_seed=args.noise_seed,
    )
    return SpotcheckConfig(
        decoder=spec,
        count=args.count,
        fraction=args.fraction,
        seed=args.sample_seed,
        batch_size=args.decode_batch_size,
        storage=storage_from_args(args),
    )


def run_spotcheck(args: argparse.Namespace, tokens: str, shards: str, output: str) -> int:
    try:
        summary = spotcheck(tokens, shards, output, spotcheck_config_from_args(args))
    except USAGE_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_json(), indent=2))
    print(f"report: {output.rstrip('/')}/report.html")
    return 1 if summary.missing else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.spotcheck",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tokens", required=True, help="tokenize output URL")
    parser.add_argument("--shards", required=True, help="prepare output URL")
    parser.add_argument("--output", required=True, help="where to write the spot-check")
    add_spotcheck_arguments(parser)
    add_storage_arguments(parser)
    add_ray_arguments(parser)
    args = parser.parse_args(argv)  # fmt: skip
    start_job(args)
    return run_spotcheck(args, args.tokens, args.shards, args.output)


if __name__ == "__main__":
    raise SystemExit(main())
