"""Prepare a song catalog into 48 kHz stereo WebDataset shards with aligned lyrics.

Example:
    python -m jobs.prepare --input ./catalog --output ./prepared
    python -m jobs.prepare --input s3://bucket/catalog --output s3://bucket/prepared \\
        --s3-endpoint-url http://minio:9000 --address auto

Rerunning with the same --output finishes only what is missing.
"""

from __future__ import annotations

import argparse
import os

from core.errors import InvalidSetting, UsageError
from jobs.cli import (
    JobParser,
    add_ray_arguments,
    add_storage_arguments,
    main_entry,
    non_negative_float,
    positive_float,
    positive_int,
    require_input,
    start_job,
    storage_from_args,
)
from jobs.console import StageOutcome, print_outcomes, run_stage
from pipeline.prepare.curation import DEDUPE_CHOICES
from pipeline.prepare.input_policy import check_allowed_root
from pipeline.prepare.segment import TAIL_POLICIES, SegmentConfig
from pipeline.prepare.shards import ShardLimits
from pipeline.prepare.song import MAX_LYRICS_BYTES
from pipeline.prepare.stage import PrepareSummary, prepare_corpus
from pipeline.prepare.unit import PrepareConfig
from pipeline.quality.filters.config import FilterConfig, read_filter_file, threshold_names
from pipeline.quality.splits import GROUP_BY, SplitConfig


def build_parser() -> JobParser:
    """The prepare job's command line."""
    parser = JobParser("python -m jobs.prepare", __doc__)
    parser.add_argument(
        "--input",
        required=True,
        help="catalog: a directory, a URL prefix (s3://...) or a manifest "
        "(.jsonl, .json, .csv, .parquet)",
    )
    parser.add_argument("--output", required=True, help="output URL (local path, s3://...)")
    parser.add_argument(
        "--allow-root",
        action="append",
        default=[],
        metavar="PREFIX",
        help="also read audio and lyrics under this local directory or URL prefix "
        "(repeatable). By default a run reads only inside the --input directory, or inside "
        "the manifest's own directory or prefix; anything else, http(s) and ftp URLs "
        "included, only under an --allow-root. A refused location is a reject naming the "
        "root to allow",
    )
    parser.add_argument(
        "--segment-seconds",
        type=positive_float,
        default=35.84,
        help="segment length in seconds (default: 35.84, 896 MuCodec tokens)",
    )
    parser.add_argument(
        "--tail",
        choices=TAIL_POLICIES,
        default="keep",
        help="the final partial segment: keep it short, pad it with silence, "
        "or drop it (default: keep)",
    )
    parser.add_argument(
        "--min-tail-seconds",
        type=non_negative_float,
        default=10.0,
        help="a shorter final partial segment is dropped (default: 10)",
    )
    parser.add_argument(
        "--shard-max-samples",
        type=positive_int,
        default=100_000,
        help="roll over to a new shard past this many segments (default: 100000)",
    )
    parser.add_argument(
        "--shard-max-bytes",
        type=positive_float,
        default=1e9,
        help="roll over to a new shard past this size (default: 1e9)",
    )
    parser.add_argument(
        "--songs-per-unit",
        type=positive_int,
        default=32,
        help="songs per unit of work: the restart granularity (default: 32)",
    )
    parser.add_argument(
        "--flac-level",
        type=int,
        default=5,
        choices=range(9),
        metavar="0-8",
        help="FLAC compression level of the stored audio: higher is smaller "
        "and slower to write; decoding speed barely changes (default: 5)",
    )
    parser.add_argument(
        "--max-lyrics-bytes",
        type=positive_int,
        default=MAX_LYRICS_BYTES,
        metavar="BYTES",
        help="larger lyrics (a file, or a manifest's inline text in UTF-8) are rejected and "
        f"the song kept without them (default: {MAX_LYRICS_BYTES}, 1 MiB)",
    )
    add_quality_arguments(parser)
    parser.add_argument("--scratch-dir", help="local directory for temporary files")
    add_storage_arguments(parser)
    add_ray_arguments(parser)
    parser.add_argument(
        "--concurrency", type=positive_int, help="units processed at once (default: one per CPU)"
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an output that holds a different run"
    )
    return parser


def add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    """Filters, near-duplicates and splits (docs/quality.md)."""
    group = parser.add_argument_group(
        "quality", "every measure is recorded in quality.parquet; by default only segments of "
        "digital silence are dropped, each threshold below drops what lies beyond it",
    )  # fmt: skip
    group.add_argument("--filter-config", metavar="FILE",
                       help="thresholds from a JSON or TOML file (the keys of the flags below, "
                       "with _ for -); flags override it")  # fmt: skip
    group.add_argument("--keep-digital-silence", action="store_true",
                       help="keep segments of exact zeros (dropped by default)")  # fmt: skip
    helps = {
        "max_silence": "segment: share of 100 ms frames below -60 dBFS, 0-1",
        "min_loudness_lufs": "song: integrated loudness (BS.1770), LUFS",
        "max_loudness_lufs": "song: integrated loudness (BS.1770), LUFS",
        "max_true_peak_dbtp": "song: true peak, dBTP",
        "max_clipping": "song: share of source samples in full-scale runs, 0-1",
        "min_bandwidth_hz": "song: effective bandwidth, Hz (17000 drops 128 kbit/s mp3 sources)",
        "max_stereo_correlation": "song: 0.999 drops mono dressed as stereo",
        "min_stereo_correlation": "song: -0.5 drops a channel with inverted polarity",
        "max_channel_balance_db": "song: |left/right energy| in dB; 30 drops a dead channel",
        "max_dc_offset": "song: the larger channel mean (full scale 1.0)",
    }
    for name in threshold_names():
        group.add_argument(f"--{name.replace('_', '-')}", type=float, metavar="VALUE",
                           help=helps[name])  # fmt: skip
    group.add_argument("--dedupe", choices=DEDUPE_CHOICES, default="report",
                       help="near-duplicate songs (the same recording re-encoded, resampled or "
                       "trimmed): report them in duplicates.parquet, or keep the best of each "
                       "group (lossless, then widest band, then longest) and reject the others "
                       "(default: report)")  # fmt: skip
    group.add_argument("--dedupe-against", metavar="OUTPUT",
                       help="an earlier prepare output: new songs matching its songs are "
                       "grouped with them (and rejected with --dedupe keep-best)")  # fmt: skip
    group.add_argument("--split", default="0.9,0.05,0.05", metavar="TRAIN,VALIDATION,TEST",
                       help="split fractions (default: 0.9,0.05,0.05)")  # fmt: skip
    group.add_argument("--split-by", choices=GROUP_BY, default="artist",
                       help="what no two splits share (default: artist)")  # fmt: skip


def filter_config_from_args(args: argparse.Namespace) -> FilterConfig:
    """The file's thresholds, then the flags' over them."""
    values = read_filter_file(args.filter_config) if args.filter_config else {}
    values |= {name: value for name in threshold_names()
               if (value := getattr(args, name)) is not None}  # fmt: skip
    if args.keep_digital_silence:
        values["drop_digital_silence"] = False
    try:
        return FilterConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise InvalidSetting(f"filter thresholds: {error}") from None


def split_config_from_args(args: argparse.Namespace) -> SplitConfig:
    """--split and --split-by as a SplitConfig."""
    try:
        train, validation, test = (float(part) for part in args.split.split(","))
    except ValueError:
        raise InvalidSetting(
            f"--split {args.split!r}: give three fractions, e.g. 0.9,0.05,0.05"
        ) from None
    return SplitConfig(train, validation, test, args.split_by)


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """The PrepareConfig the command line asks for.

    Raises:
        UsageError: if a --storage-option is not KEY=VALUE.
        InvalidSetting: if the segment settings cannot work.
    """
    return PrepareConfig(
        segment=SegmentConfig(args.segment_seconds, args.tail, args.min_tail_seconds),
        shard_limits=ShardLimits(args.shard_max_samples, int(args.shard_max_bytes)),
        songs_per_unit=args.songs_per_unit,
        flac_level=args.flac_level,
        max_lyrics_bytes=args.max_lyrics_bytes,
        filters=filter_config_from_args(args),
        splits=split_config_from_args(args),
        dedupe=args.dedupe,
        dedupe_against=args.dedupe_against,
        allowed_roots=tuple(args.allow_root),
        scratch_dir=args.scratch_dir,
        storage=storage_from_args(args),
    )


def check_usage(args: argparse.Namespace) -> None:
    """Refuse what cannot work before Ray starts."""
    config_from_args(args)
    for root in args.allow_root:
        try:
            check_allowed_root(root)
        except InvalidSetting as error:
            raise UsageError(f"--allow-root: {error}") from None
    require_input(args.input, "--input", storage_from_args(args))
    if args.scratch_dir and not os.path.isdir(args.scratch_dir):
        raise UsageError(f"--scratch-dir {args.scratch_dir}: no such directory")


def run_prepare(args: argparse.Namespace, input_url: str, output_url: str) -> StageOutcome:
    """Run the stage with a progress bar over units; return its row of the summary."""

    def work(bar) -> PrepareSummary:
        def progress(finished: int, total: int, result) -> None:
            bar.total = total
            if result is not None:
                bar.set_postfix(segments=result.segments, rejects=len(result.rejects),
                                refresh=False)  # fmt: skip
            bar.update(1)

        def fingerprint_progress(done: int, total: int) -> None:
            # The same bar counts the source files being hashed and surveyed first, then
            # the units. Described before each reset, which redraws the bar.
            if done == 0:
                bar.set_description_str("prepare: hashing and fingerprinting", refresh=False)
                bar.unit = "file"
                bar.reset(total)
            bar.update(done - bar.n)
            if done == total:
                bar.set_description_str("prepare", refresh=False)
                bar.unit = "unit"
                bar.total = None  # The units' count comes with their first progress.
                bar.reset()

        return prepare_corpus(
            input_url, output_url, config_from_args(args),
            concurrency=args.concurrency, force=args.force, progress=progress,
            fingerprint_progress=fingerprint_progress,
        )  # fmt: skip

    return run_stage(
        "prepare", "unit", work,
        lambda s: f"{s.units_failed} of {s.units} units failed" if s.units_failed else None,
        lambda s, status: prepare_outcome(s, status, output_url),
    )  # fmt: skip


def prepare_outcome(summary: PrepareSummary, status: int, output_url: str) -> StageOutcome:
    """The prepare row of the summary table for `summary`, exited with `status`."""
    splits = ", ".join(f"{name} {split['songs']:,} songs {split['hours']:,.2f} h"
                       for name, split in summary.splits.items())  # fmt: skip
    drops = ", ".join(f"{rule} {count:,}" for rule, count in summary.drops.items()) or "none"
    return StageOutcome(
        "prepare", status,
        f"{summary.songs_ok:,}/{summary.songs_in:,} songs, {summary.segments:,} segments "
        f"in {summary.shards:,} shards, {summary.audio_hours:,.2f} h",
        summary.rejects, summary.wall_seconds, output_url,
        details=(f"splits: {splits}", f"dropped: {drops}",
                 f"near-duplicate groups: {summary.duplicate_groups:,}"),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Runs the prepare job.

    Args:
        argv: The command line after `python -m jobs.prepare`; None reads `sys.argv`.

    Returns:
        The exit status: 0, or 1 when units are left for a rerun, 2 for a usage error.
    """
    args = build_parser().parse_args(argv)
    check_usage(args)
    start_job(args)
    outcome = run_prepare(args, args.input, args.output)
    print_outcomes([outcome])
    return outcome.status


if __name__ == "__main__":
    main_entry(main)
