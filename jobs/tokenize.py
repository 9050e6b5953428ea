"""Tokenize prepared shards into one token Parquet table per codec on GPU (or CPU) actors.

Example:
    python -m jobs.tokenize --shards ./prepared --output ./tokens --checkpoint ./mucodec-ckpt
    python -m jobs.tokenize --shards ./prepared --output ./tokens --config tiny   # test model
    python -m jobs.tokenize --shards ./prepared --output ./tokens \\
        --codec mucodec,dac,encodec --config tiny --codec-option encodec:bandwidth=6
    python -m jobs.tokenize --shards s3://bucket/prepared --output s3://bucket/tokens \\
        --checkpoint /models/mucodec --precision bfloat16 --address auto

The shards are read once for every codec of --codec; each codec's table goes to
<output>/<codec>/. --checkpoint takes our converted checkpoint (see
`python -m jobs.convert_checkpoint`), the official files, or a local Hugging Face model
directory; --config builds a preset with seeded random weights (tests, benchmarks). Both
take CODEC=VALUE for one codec. Rerunning with the same --output finishes only what is
missing, and computes only the codecs a part lacks.
"""

from __future__ import annotations

import argparse
import re

from audio_codecs import registry
from audio_codecs.base import CodecSpec
from core.errors import UsageError
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
from pipeline.tokenize.stage import TokenizeConfig, TokenizeSummary, tokenize_shards

_CODEC_NAME = re.compile(r"[a-z][a-z0-9_]*")


def add_tokenizer_arguments(parser: argparse.ArgumentParser) -> None:
    """The codec options (shared with jobs.run)."""
    parser.add_argument(
        "--codec",
        default=registry.DEFAULT_CODEC,
        help=f"comma-separated codecs to run, each into <output>/<codec>/ "
        f"({', '.join(registry.codecs())}; default: {registry.DEFAULT_CODEC}); 'simulated' "
        "stands in for a device of a set speed to measure the pipeline around it (--config "
        "simulated=mucodec|dac|encodec for the code shape, --codec-option "
        "simulated:device_ms=MS per segment)",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="[CODEC=]PATH",
        help="a codec's weights: our converted directory (python -m jobs.convert_checkpoint) "
        f"or a local Hugging Face model directory; a bare PATH is {registry.DEFAULT_CODEC}'s "
        "(see docs/tokenizer.md); repeatable",
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="[CODEC=]NAME",
        help="a preset with seeded random weights, for tests and benchmarks: NAME for every "
        "codec without a checkpoint, CODEC=NAME for one; repeatable. Presets: "
        + "; ".join(
            f"{name}: {', '.join(registry.plugin(name).presets)}" for name in registry.codecs()
        ),
    )
    parser.add_argument(
        "--codec-option",
        action="append",
        default=[],
        metavar="CODEC:NAME=VALUE",
        help="a codec setting, e.g. dac:mode=compress or encodec:bandwidth=6; repeatable",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16 autocast of the encoders on GPU (default: float32, bit-faithful); "
        "--dtype, its former name, still works for this release",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="segments per actor call (default: 16 on CPUs; on a GPU 128, each encode call "
        "as many as its free memory holds)",
    )
    parser.add_argument(
        "--actors",
        type=positive_int,
        help="actors per codec (default: one per GPU, else one per 2 CPUs)",
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


def codec_specs(args: argparse.Namespace) -> tuple[CodecSpec, ...]:
    """The codecs the command line asks for, in `--codec` order.

    Raises:
        UsageError: An unknown codec or preset, a setting for a codec not run, a codec
            without a checkpoint or preset, or a malformed value.
    """
    names = [n.strip() for n in args.codec.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise UsageError(f"--codec: give each codec once, at least one: {args.codec!r}")
    known = registry.codecs(simulated=True)
    for name in names:
        if name not in known:
            raise UsageError(f"--codec: unknown codec {name!r} (known: {', '.join(known)})")
    default_config, configs = _per_codec(args.config, "--config", names)
    default_checkpoint, checkpoints = _per_codec(args.checkpoint, "--checkpoint", names)
    if default_checkpoint is not None:
        default = registry.DEFAULT_CODEC
        if default not in names:
            raise UsageError(f"--checkpoint PATH is {default}'s; give CODEC=PATH for the others")
        checkpoints.setdefault(default, default_checkpoint)
    options: dict[str, list[tuple[str, str]]] = {name: [] for name in names}
    for text in args.codec_option:
        codec, _, setting = text.partition(":")
        key, equals, value = setting.partition("=")
        if not (codec and key and equals):
            raise UsageError(f"--codec-option: expected CODEC:NAME=VALUE, not {text!r}")
        if codec not in options:
            raise UsageError(f"--codec-option {text!r}: codec {codec!r} is not in --codec")
        options[codec].append((key, value))
    specs = []
    for name in names:
        checkpoint = checkpoints.get(name)
        preset = configs.get(name)
        if checkpoint is not None and preset is not None:
            raise UsageError(f"{name}: give a checkpoint or a --config preset, not both")
        if checkpoint is None:
            preset = preset or default_config
        if checkpoint is None and preset is None:
            raise UsageError(f"{name}: give --checkpoint {name}=PATH or --config")
        presets = registry.plugin(name).presets
        if preset is not None and preset not in presets:
            raise UsageError(
                f"--config: {name} has no preset {preset!r} (known: {', '.join(presets)})"
            )
        specs.append(
            CodecSpec(name, preset=preset, checkpoint=checkpoint, seed=args.seed,
                      precision=args.precision, options=tuple(options[name]))
        )  # fmt: skip
    return tuple(specs)


def _per_codec(values: list[str], flag: str, names: list[str]) -> tuple[str | None, dict]:
    """`flag`'s values split into the one for every codec and the CODEC=VALUE ones."""
    default, per_codec = None, {}
    for text in values:
        codec, equals, value = text.partition("=")
        if equals and _CODEC_NAME.fullmatch(codec):
            if codec not in names:
                raise UsageError(f"{flag} {text!r}: codec {codec!r} is not in --codec")
            if codec in per_codec:
                raise UsageError(f"{flag}: {codec} given twice")
            per_codec[codec] = value
        elif default is not None:
            raise UsageError(f"{flag}: give one plain value at most ({default!r}, {text!r})")
        else:
            default = text
    return default, per_codec


def tokenize_config_from_args(args: argparse.Namespace) -> TokenizeConfig:
    """The stage's config from parsed arguments.

    Raises:
        UsageError: A bad codec setting (see `codec_specs`).
    """
    return TokenizeConfig(
        codecs=codec_specs(args),
        batch_size=args.batch_size,
        actors=args.actors,
        shards_per_part=args.shards_per_part,
        row_group_size=args.row_group_size,
        storage=storage_from_args(args),
    )


def check_tokenizer_usage(args: argparse.Namespace) -> None:
    """Refuse codecs that cannot load before Ray starts; sets `args.codecs` (the names)."""
    config = tokenize_config_from_args(args)
    args.codecs = [spec.codec for spec in config.codecs]
    for spec in config.codecs:
        if spec.checkpoint:
            require_input(spec.checkpoint, "--checkpoint", storage_from_args(args))


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


def run_tokenize(
    args: argparse.Namespace, shards_url: str, output_url: str, ray_start_s: float | None = None
) -> StageOutcome:
    """Run the stage with a progress bar over rows; return its row of the summary (with
    `ray_start_s`, the seconds Ray took to start for this stage alone, among its fixed costs)."""
    config = tokenize_config_from_args(args)

    def work(bar) -> dict[str, TokenizeSummary]:
        def progress(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return tokenize_shards(shards_url, output_url, config, force=args.force,
                               progress=progress)  # fmt: skip

    return run_stage(
        "tokenize", "segment", work,
        lambda summaries: "; ".join(
            f"{s.codec}: {s.parts_unfinished} of {s.parts} parts unfinished"
            for s in summaries.values() if s.parts_unfinished
        ) or None,
        lambda summaries, status: tokenize_outcome(summaries, status, output_url, ray_start_s),
    )  # fmt: skip


def tokenize_outcome(
    summaries: dict[str, TokenizeSummary],
    status: int,
    output_url: str,
    ray_start_s: float | None = None,
) -> StageOutcome:
    """The stage's row of the printed summary, and a line under it for each codec: counts,
    the steady rate and the fixed costs (`pipeline.tokenize.timing`)."""
    first = next(iter(summaries.values()))
    segments = max(s.segments for s in summaries.values())
    result = f"{len(summaries)} codec{'s' if len(summaries) > 1 else ''}, {segments:,} segments"
    if ray_start_s is not None:
        result += f"; Ray start {ray_start_s:.1f} s"
    rejects = max(s.rejects for s in summaries.values())
    details = tuple(codec_line(s) for s in summaries.values())
    return StageOutcome(
        "tokenize", status, result, rejects, first.wall_seconds, output_url, details
    )


def codec_line(summary: TokenizeSummary) -> str:
    """One codec's line under the tokenize row."""
    timing, actors = summary.timing, summary.actors
    line = (
        f"{summary.codec}: {summary.segments:,} segments, {summary.tokens:,} tokens, "
        f"{summary.audio_hours:,.2f} h on {actors} {summary.device} actor{'s' * (actors > 1)}"
    )
    rate = timing.steady_segments_per_second
    if rate:
        hours = rate * summary.audio_hours * 3600 / summary.segments
        line += f"; steady {rate:,.1f} segments/s ({hours:,.0f} h/h)"
    elif summary.segments:
        line += "; steady rate: too few batches to tell"
    line += f"; fixed {timing.fixed_seconds:.1f} s"
    if timing.fixed:
        fixed = timing.fixed
        line += (
            f" (start-up {fixed['start_up']:.1f}, model {fixed['model_load']:.1f}, "
            f"finish {fixed['finish']:.1f})"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit status."""
    args = build_parser().parse_args(argv)
    check_tokenizer_usage(args)
    require_input(args.shards, "--shards", storage_from_args(args))
    ray_start_s = start_job(args)
    outcome = run_tokenize(args, args.shards, args.output, ray_start_s)
    print_outcomes([outcome])
    return outcome.status


if __name__ == "__main__":
    main_entry(main)
