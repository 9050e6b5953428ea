"""Encode throughput of every codec on the same segments, through the codec interface.

    python -m jobs.bench codecs --codec mucodec,dac,encodec --size tiny --segments 4
    python -m jobs.bench codecs --size full --segments 2 --device cpu
    python -m jobs.bench codecs --size full --segments 64 --batch-size 16 --device cuda

Each codec encodes the same N segments of 35.84 s (48 kHz stereo, noise-like music) in
batches of --batch-size with random weights (`tiny` presets, or the released models' sizes
with `--size full`), after one untimed warm-up batch. Reported per codec: wall and CPU
seconds, segments per second, seconds of audio per second (x real time), the code frames
per segment and the codes' bitrate. Codecs run one after the other, not in pairs: these are
throughputs, not a ratio; the load average before and after each is printed with it.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from audio_codecs import registry
from audio_codecs.base import CodecSpec
from jobs.benchmarks.encoder import SEGMENT_SAMPLES, bench_music
from jobs.benchmarks.paired import Clocks, Load, load_json, warn_if_noisy

SEGMENT_SECONDS = 35.84


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the codecs benchmark's options to its subcommand's `parser`."""
    parser.add_argument(
        "--codec",
        default=",".join(registry.codecs()),
        help="comma-separated codecs (default: every registered one)",
    )
    parser.add_argument(
        "--size",
        choices=("tiny", "full"),
        default="tiny",
        help="tiny presets, or the released models' sizes (random weights)",
    )
    parser.add_argument("--segments", type=int, default=4, help="35.84 s segments (default 4)")
    parser.add_argument("--batch-size", type=int, default=2, help="segments per encode call")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")


def segments(count: int, seed: int = 0) -> list[torch.Tensor]:
    """`count` stereo 48 kHz segments of 35.84 s of the encoder benchmark's test music."""
    audio = bench_music(count, seed)  # [2, count x 35.84 s]
    return list(audio.reshape(2, count, SEGMENT_SAMPLES).transpose(0, 1))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Times every requested codec's encode on the same segments.

    Returns:
        The JSON-ready figures per codec, with the load average around each.
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    audio = segments(args.segments)
    batches = [audio[i : i + args.batch_size] for i in range(0, len(audio), args.batch_size)]
    figures: dict[str, Any] = {}
    loads: list[Load] = []
    for name in args.codec.split(","):
        plugin = registry.plugin(name)
        preset = plugin.full_size_preset if args.size == "full" else plugin.tiny_preset
        codec = registry.load_codec(CodecSpec(name, preset=preset), device)
        codec.encode(batches[0])  # Warm-up: allocator, kernels, lazy initialisation.
        frames: list[int] = []

        def encode_all(codec=codec, frames=frames) -> None:
            frames.clear()
            for batch in batches:
                frames.extend(e.codes.shape[-1] for e in codec.encode(batch))
            if device.type == "cuda":
                torch.cuda.synchronize()

        around = [Load.now()]
        timing = Clocks().measure(encode_all)
        around.append(Load.now())
        loads += around
        audio_seconds = args.segments * SEGMENT_SECONDS
        figures[name] = {
            "preset": preset,
            "seconds": round(timing.wall_s, 3),
            "cpu_seconds": round(timing.cpu_s, 3),
            "segments_per_second": round(args.segments / timing.wall_s, 3),
            "x_real_time": round(audio_seconds / timing.wall_s, 2),
            "frames_per_segment": frames[0],
            "bitrate_kbps": round(codec.info.bitrate_kbps, 3),
            "load": load_json(around),
        }
    warn_if_noisy(loads)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "segments": args.segments,
        "batch_size": args.batch_size,
        "size": args.size,
        "codecs": figures,
    }
