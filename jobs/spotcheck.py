"""Spot-check token tables: decode a reproducible sample back to audio, measure, report.

Example:
    python -m jobs.spotcheck --tokens ./run/tokens --shards ./run/prepared \\
        --output ./run/spotcheck --count 20 --decoder-checkpoint ./mucodec-decoder
    python -m jobs.spotcheck ... --fraction 0.01 \\
        --official-mucodec ckpt/mucodec.pt --official-audioldm ckpt/audioldm_48k.pth
    python -m jobs.spotcheck ... --count 4 --decoder-config tiny --steps 4   # random weights

Every codec with token tables under --tokens (<tokens>/<codec>/tokens) decodes the same
sampled segments: MuCodec with the decoder given here (its options say "MuCodec:"), other
codecs with their own model, rebuilt from the tables' preset and seed or from
--checkpoint CODEC=PATH (repeatable).

Open <output>/report.html in a browser. Rerunning with the same inputs, codecs and decoder
settings skips samples already decoded; other settings (codecs, decoder, --steps,
--guidance, --decoder-precision, --noise-seed, --decoder-window) are refused unless
--force, which replaces the old spot-check.
"""

from __future__ import annotations

import argparse
from typing import Any

from audio_codecs import registry
from core.errors import UsageError
from jobs.cli import (
    JobParser,
    add_ray_arguments,
    add_storage_arguments,
    fraction,
    main_entry,
    positive_int,
    require_input,
    start_job,
    storage_from_args,
)
from jobs.console import StageOutcome, print_outcomes, run_stage
from pipeline.io import join
from pipeline.spotcheck.stage import SpotcheckConfig, SpotcheckSummary, spotcheck


def add_spotcheck_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The sample options and every codec's decoder options (shared with jobs.run, where
    the sample is optional)."""
    amount = parser.add_mutually_exclusive_group(required=required)
    amount.add_argument("--count", type=positive_int, help="number of segments to decode")
    amount.add_argument("--fraction", type=fraction, help="fraction of segments to decode")
    parser.add_argument(
        "--sample-seed", type=int, default=0, help="seed of the sample choice (default: 0)"
    )
    for name in registry.codecs():
        registry.plugin(name).add_decoder_arguments(parser)
    parser.add_argument(
        "--decode-batch-size",
        type=positive_int,
        default=4,
        help="segments decoded together per actor call (default: 4)",
    )


def decoder_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each codec's decoder settings the arguments give (codecs that take none left out).

    Raises:
        UsageError: a combination of a codec's options that cannot work.
    """
    options = {name: registry.plugin(name).decoder_options(args) for name in registry.codecs()}
    return {name: dict(given) for name, given in options.items() if given}


def spotcheck_config_from_args(args: argparse.Namespace) -> SpotcheckConfig:
    """The stage's config from parsed arguments.

    Raises:
        UsageError: a bad combination of options.
    """
    return SpotcheckConfig(
        decoders=tuple(sorted(decoder_options(args).items())),
        checkpoints=codec_checkpoints(args),
        count=args.count,
        fraction=args.fraction,
        seed=args.sample_seed,
        batch_size=args.decode_batch_size,
        storage=storage_from_args(args),
    )


def codec_checkpoints(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """`--checkpoint CODEC=PATH` options as sorted (codec, path) pairs.

    Raises:
        UsageError: An option is not CODEC=PATH, or names a codec twice.
    """
    pairs = []
    for option in getattr(args, "checkpoint", None) or []:
        codec, sep, path = option.partition("=")
        if not (sep and codec and path):
            raise UsageError(f"--checkpoint {option!r}: expected CODEC=PATH, e.g. dac=./dac-44k")
        pairs.append((codec, path))
    if len({c for c, _ in pairs}) != len(pairs):
        raise UsageError("--checkpoint names a codec twice")
    return tuple(sorted(pairs))


def spotcheck_asked(args: argparse.Namespace) -> bool:
    """Whether a sample or a decoder was given (jobs.run spot-checks only then)."""
    return args.count is not None or args.fraction is not None or bool(decoder_options(args))


def check_spotcheck_usage(args: argparse.Namespace) -> None:
    """Refuse decoder settings that cannot work, and files they name that do not exist,
    before Ray starts."""
    config = spotcheck_config_from_args(args)
    storage = storage_from_args(args)
    for codec, options in config.decoders:
        for flag, path in registry.plugin(codec).decoder_inputs(options).items():
            require_input(path, flag, storage)
    for codec, path in config.checkpoints:
        require_input(path, f"--checkpoint {codec}", storage)


def run_spotcheck(args: argparse.Namespace, tokens: str, shards: str, output: str) -> StageOutcome:
    """Decode the sample with a progress bar over segments; return its row of the summary."""

    def work(bar) -> SpotcheckSummary:
        def progress(decoded: int, total: int) -> None:
            bar.total = total
            bar.update(decoded - bar.n)

        config = spotcheck_config_from_args(args)
        return spotcheck(tokens, shards, output, config, progress, force=args.force)

    return run_stage(
        "spotcheck", "segment", work,
        lambda s: (f"{len(s.missing)} sampled segments could not be read from the shards"
                   if s.missing else None),
        lambda s, status: spotcheck_outcome(s, status, output),
    )  # fmt: skip


def spotcheck_outcome(summary: SpotcheckSummary, status: int, output: str) -> StageOutcome:
    """The stage's row of the printed summary."""
    decoded = summary.decoded_now + summary.already_done
    mels = {c: m.get("mel_distance") for c, m in summary.metrics.items()}
    quality = "".join(f", {c} mel {m:.2f}" for c, m in mels.items() if m is not None)
    return StageOutcome(
        "spotcheck", status,
        f"{decoded:,}/{summary.sampled:,} segments of {summary.songs_sampled:,} songs, "
        f"{len(summary.codecs)} codec{'s' * (len(summary.codecs) != 1)}{quality}",
        len(summary.missing), summary.wall_seconds, join(output, "report.html"),
    )  # fmt: skip


def build_parser() -> JobParser:
    """The job's argument parser."""
    parser = JobParser("python -m jobs.spotcheck", __doc__)
    parser.add_argument("--tokens", required=True, help="tokenize output URL")
    parser.add_argument("--shards", required=True, help="prepare output URL")
    parser.add_argument("--output", required=True, help="where to write the spot-check")
    add_spotcheck_arguments(parser)
    # Here only: in jobs.run, --checkpoint is the tokenizer's.
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="CODEC=PATH",
        help="the checkpoint a codec's token tables were made from (repeatable); needed for "
        "every codec other than mucodec whose tables were not made from a random preset",
    )
    add_storage_arguments(parser)
    add_ray_arguments(parser)
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an output that holds a spot-check with other inputs or decoder settings",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit status."""
    args = build_parser().parse_args(argv)
    check_spotcheck_usage(args)
    storage = storage_from_args(args)
    require_input(args.tokens, "--tokens", storage)
    require_input(args.shards, "--shards", storage)
    start_job(args)
    outcome = run_spotcheck(args, args.tokens, args.shards, args.output)
    print_outcomes([outcome])
    return outcome.status


if __name__ == "__main__":
    main_entry(main)
