"""What feeds a device: the tokenize stage around the simulated codec, at steady state.

    python -m jobs.bench tokenize --codec simulated            # both figures, >= 1,000 segments

Run by `jobs.bench tokenize` when `--codec simulated`. The simulated codec holds each batch
for a set time per segment without using the CPU, as a GPU does, so the stage's own work
(shard reading and FLAC decoding, Ray Data's hand-offs, the actor's staging, part writing)
is all that runs on the CPUs. Two figures, both from the stage's steady rate (its first to
last row at the driver, the fixed costs apart):

* feed ceiling: device time 0; segments per second, and per CPU core of the local Ray;
* overlap: the device set to ~60% of the ceiling's rate (its time per segment fixed from
  the first ceiling run); stage rate / device rate, 1.0 when the device never waits.

A warm-up ceiling run comes first (it fixes the device time), then --pairs pairs of an
overlap run and a ceiling run; medians are quoted with their spread and the load average.

The corpus: eight synthetic songs prepared once, their shards then copied with new keys
until there are --segments segments (the same audio several times: the feed's cost does not
depend on what the songs are). --workdir keeps it for the next run.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import statistics
import tarfile
import tempfile
import time
from typing import Any

import ray

from audio_codecs.base import CodecSpec
from jobs.benchmarks.paired import Load, load_json, spread, warn_if_noisy
from pipeline.execution import start_ray
from pipeline.io import StorageOptions
from pipeline.prepare.stage import prepare_corpus
from pipeline.prepare.unit import PrepareConfig
from pipeline.shard_reader import find_shards, iter_shard_samples
from pipeline.tokenize.stage import TokenizeConfig, TokenizeSummary, tokenize_shards
from testing.synth import synth_song, write_audio

CODEC = "simulated"
SONGS, SONG_SEGMENTS = 8, 5  # The corpus prepared once: 40 segments, then copied ...
SHARD_SEGMENTS = 100  # ... into shards of this many (a prepare unit of 32 songs: ~190).
DEVICE_SHARE = 0.6  # The overlap run's device rate, as a share of the feed ceiling.


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measures the feed ceiling and the overlap (module docstring).

    Returns:
        The JSON-ready result: `feed_ceiling.segments_per_s_per_core`, `overlap.median`, the
        per-segment costs and fixed costs of the runs, and the load.
    """
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-feed-")
    start_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    shards, segments = feed_corpus(workdir, args.segments)
    preset = args.config or "mucodec"
    runs = itertools.count()

    def stage(device_ms: float) -> TokenizeSummary:
        spec = CodecSpec(CODEC, preset=preset, options=(("device_ms", f"{device_ms:.4f}"),))
        config = TokenizeConfig(codecs=(spec,), batch_size=args.batch_size, actors=args.actors)
        output = fresh_output(workdir, next(runs))
        summary = tokenize_shards(shards, output, config, force=True)[CODEC]
        assert summary.segments == segments, (summary.segments, segments)
        return summary

    loads = [Load.now()]
    warm = stage(0.0)
    ceiling_rate = warm.timing.steady_segments_per_second
    if not ceiling_rate:
        raise SystemExit(
            f"error: {segments} segments in batches of {args.batch_size} give no steady rate "
            "(it needs batches ending at two moments in the run's second half): raise --segments"
        )
    device_ms = 1000 / (DEVICE_SHARE * ceiling_rate)
    device_rate = 1000 / device_ms
    ceilings, overlaps, last = [], [], {}
    for _ in range(args.pairs):
        loads.append(Load.now())
        overlap = stage(device_ms)
        overlaps.append(overlap.timing.steady_segments_per_second / device_rate)
        ceiling = stage(0.0)
        ceilings.append(ceiling.timing.steady_segments_per_second)
        last = {"ceiling": ceiling, "overlap": overlap}
    loads.append(Load.now())
    warn_if_noisy(loads)
    median_ceiling = statistics.median(ceilings)
    return {
        "codec": CODEC,
        "preset": preset,
        "cpus": cpus,
        "segments": segments,
        "batch_size": args.batch_size,
        "feed_ceiling": {
            "segments_per_s": spread(ceilings),
            "segments_per_s_per_core": round(median_ceiling / cpus, 2),
            "warm_up_segments_per_s": ceiling_rate,
            "per_segment_s": last["ceiling"].timing.per_segment,
            "fixed_s": last["ceiling"].timing.fixed,
            "wall_segments_per_s": round(last["ceiling"].segments_per_second, 2),
        },
        "overlap": {
            **spread(overlaps),
            "device_ms_per_segment": round(device_ms, 3),
            "device_segments_per_s": round(device_rate, 2),
            "per_segment_s": last["overlap"].timing.per_segment,
        },
        "load": load_json(loads),
    }


def fresh_output(workdir: str, run: int) -> str:
    """The output directory of timed run `run`, emptied: a finished one would be resumed."""
    output = os.path.join(workdir, f"tokens-{run}")
    shutil.rmtree(output, ignore_errors=True)
    return output


def feed_corpus(workdir: str, segments: int) -> tuple[str, int]:
    """Shards holding at least `segments` segments under `workdir` (made once, then reused).

    Eight synthetic songs of five segments each (16-bit 48 kHz stereo FLAC: no ffmpeg
    needed) are prepared, one unit per song so that every core works, and their samples
    copied with new keys into shards of `SHARD_SEGMENTS`, about what prepare writes for a
    unit of a real catalog.

    Returns:
        The shard directory and how many segments it holds.
    """
    target = os.path.join(workdir, f"feed-shards-{segments}")
    done = os.path.join(target, "COMPLETE")
    if os.path.exists(done):
        with open(done, encoding="utf-8") as handle:
            return target, int(handle.read())
    corpus, prepared = os.path.join(workdir, "feed-corpus"), os.path.join(workdir, "prepared")
    seconds = SONG_SEGMENTS * PrepareConfig().segment.segment_seconds + 1.0
    for seed in range(SONGS):
        audio = synth_song(seconds, 48_000, 2, seed)
        write_audio(os.path.join(corpus, f"song{seed:02d}.flac"), audio, 48_000, "PCM_16")
    prepare_corpus(corpus, prepared, PrepareConfig(songs_per_unit=1), force=True)
    sources = [shard.url for shard in find_shards(prepared, PrepareConfig().storage)]
    written = _write_copies(sources, target, segments)
    with open(done, "w", encoding="utf-8") as handle:
        handle.write(str(written))
    return target, written


def _write_copies(sources: list[str], target: str, segments: int) -> int:
    """Copies of the samples of local shards `sources`, keys prefixed by the copy's number,
    until `segments` are written, in shards of `SHARD_SEGMENTS`; returns the count."""
    os.makedirs(target, exist_ok=True)
    copies = (
        (f"c{copy:04d}-{key}", members)
        for copy in itertools.count()
        for source in sources
        for key, members in iter_shard_samples(source, StorageOptions())
    )
    samples = itertools.islice(copies, segments)
    written = 0
    while chunk := list(itertools.islice(samples, SHARD_SEGMENTS)):
        name = os.path.join(target, f"feed-{written // SHARD_SEGMENTS:06d}.tar")
        with tarfile.open(name, "w") as out:
            for key, members in chunk:
                for extension, data in members.items():
                    member = tarfile.TarInfo(f"{key}.{extension}")
                    member.size, member.mtime = len(data), int(time.time())
                    out.addfile(member, io.BytesIO(data))
        written += len(chunk)
    return written
