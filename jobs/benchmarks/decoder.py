"""Decoder speed as a real-time factor (RTF = decode wall time / audio duration).

Decodes random codes with a randomly initialised decoder (`--config official` = the
full-size architecture) and reports, per step count, the measured wall time and RTF, plus
a breakdown: estimator time per Euler step and the per-window cost of the Mel-VAE and
the vocoder. The flow cost is exactly linear in the number of steps, so a run at a few
steps also gives a projection to any other count (`projected_rtf`), which is how the
full-size model gets a CPU figure at all: one full-size window costs ~1 PFLOP at 50 steps.

`--official-way` replays the reference's execution (one item and window at a time,
estimator under CUDA fp16 autocast, float32 VAE/vocoder, vocoder in 3/4-overlapping
chunks) for comparison with ours (batched, `--precision` autocast, chunk reuse or
`--whole-window-vocoder`); `--pairs N` compares the two in one run, alternating them N
times at the first step count (jobs/benchmarks/paired.py), and quotes the median of the
per-pair ratios official / ours. `--window-codes/--hop-codes` shrink the window for a short
CPU run of the full-size model (the result is then not representative of the real window,
whose attention spans 4096 tokens); leave them unset for real figures. The load average is
sampled around every timing; a run under more load than cores says so on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from jobs.benchmarks.paired import Load, load_json, measure_pairs, warn_if_noisy
from mucodec.decoder.builders import build_decoder
from mucodec.decoder.config import DECODER_PRESETS, WindowConfig, decoder_preset
from mucodec.decoder.model import MuCodecDecoder, plan_windows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the decoder benchmark's options to its subcommand's `parser`."""
    # An unknown name is refused by argparse here, not by decoder_preset()'s ValueError.
    parser.add_argument("--config", default="official", choices=sorted(DECODER_PRESETS),
                        help="decoder preset (random weights)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision", "--dtype", choices=("float32", "bfloat16", "float16"), default="float32"
    )
    parser.add_argument("--official-way", action="store_true", help="replay the reference")
    parser.add_argument(
        "--whole-window-vocoder", action="store_true", help="vocode each window at once"
    )
    parser.add_argument("--steps", default="50,20", help="comma-separated Euler step counts")
    parser.add_argument("--seconds", type=float, default=35.84, help="audio length to decode")
    parser.add_argument("--batch", type=int, default=1, help="items decoded together")
    parser.add_argument("--window-codes", type=int, help="override the window (short CPU runs)")
    parser.add_argument("--hop-codes", type=int, help="override the window hop")
    parser.add_argument("--warmup", type=int, help="warm-up decodes (default: 1 on GPU, 0 on CPU)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--project", default="50,20", help="step counts to project RTF to")
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="also alternate the official way and ours this many times at the first step "
        "count and quote the median ratio (default 0: off)",
    )


class _Timers:
    """Wall time spent inside chosen modules' forward (synchronising CUDA around each)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def attached(self, modules: dict[str, nn.Module]) -> Iterator[None]:
        handles, started = [], {}
        for name, module in modules.items():

            def pre(_m: nn.Module, _a: object, name: str = name) -> None:
                self._sync()
                started[name] = time.perf_counter()

            def post(_m: nn.Module, _a: object, _o: object, name: str = name) -> None:
                self._sync()
                self.seconds[name] += time.perf_counter() - started[name]
                self.calls[name] += 1

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _decode(decoder: MuCodecDecoder, codes: torch.Tensor, steps: int, changes: dict) -> None:
    """One decode of `codes` [B, 1, N] at `steps` Euler steps, waiting for the device."""
    sampling = decoder.with_sampling(num_steps=steps, **changes)
    decoder.decode(codes, seeds=list(range(codes.shape[0])), sampling=sampling)
    if decoder.device.type == "cuda":
        torch.cuda.synchronize(decoder.device)


def _decode_once(
    decoder: MuCodecDecoder, codes: torch.Tensor, steps: int, sampling_changes: dict
) -> tuple[float, _Timers]:
    timers = _Timers(decoder.device)
    modules = {
        "estimator": decoder.flow.estimator,
        "vae": decoder.vae,
        "vocoder": decoder.vocoder,
    }
    with timers.attached(modules):
        timers._sync()
        started, cpu_started = time.perf_counter(), time.process_time()
        _decode(decoder, codes, steps, sampling_changes)
        wall = time.perf_counter() - started
    timers.seconds["process_cpu"] = time.process_time() - cpu_started
    return wall, timers


def _dtype_label(args: argparse.Namespace, device: torch.device) -> str:
    if not args.official_way:
        return args.precision
    if device.type == "cuda":
        return "float16 autocast estimator, float32 VAE/vocoder (official way)"
    return "float32 (official way: its fp16 autocast is CUDA-only)"


def run(args: argparse.Namespace) -> dict:
    """Times the decoder on random codes as `args` says.

    Returns:
        The benchmark's JSON-ready result (seconds, real-time factors, the load).
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    config = decoder_preset(args.config)
    if args.window_codes or args.hop_codes:
        window = WindowConfig.of_length(args.window_codes or config.window.window_codes)
        if args.hop_codes:
            window = dataclasses.replace(window, hop_codes=args.hop_codes)
        config = dataclasses.replace(config, window=window)
    device = torch.device(args.device)
    decoder = build_decoder(config, seed=0, device=device, precision=args.precision)

    n_codes = round(args.seconds * config.window.token_rate)
    audio_seconds = n_codes / config.window.token_rate
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, decoder.codebook_size, (args.batch, 1, n_codes), generator=generator)
    windows = len(plan_windows(n_codes, config.window).starts)
    changes = {
        "official_way": args.official_way,
        "vocoder_chunks": not args.whole_window_vocoder,
    }
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cuda" else 0)
    for _ in range(warmup):
        _decode_once(decoder, codes, 1, changes)

    measured = {}
    per_step_window = render_window = None
    loads = []
    step_counts = [int(s) for s in args.steps.split(",")]
    for steps in step_counts:
        loads.append(Load.now())
        wall, timers = _decode_once(decoder, codes, steps, changes)
        estimator = timers.seconds["estimator"]
        # Per window and item: the estimator runs `steps` times (CFG rows batched).
        per_step_window = estimator / (steps * windows)
        render_window = (timers.seconds["vae"] + timers.seconds["vocoder"]) / windows
        measured[steps] = {
            "wall_s": round(wall, 3),
            "rtf": round(wall / (audio_seconds * args.batch), 4),
            "estimator_s": round(estimator, 3),
            "vae_s": round(timers.seconds["vae"], 3),
            "vocoder_s": round(timers.seconds["vocoder"], 3),
            "other_s": round(wall - estimator - render_window * windows, 3),
            # CPU seconds of this process: wall >> cpu / threads means a shared machine.
            "process_cpu_s": round(timers.seconds["process_cpu"], 1),
        }
    loads.append(Load.now())
    assert per_step_window is not None and render_window is not None
    other = measured[steps]["other_s"]
    projected = {
        int(s): round(
            (int(s) * per_step_window * windows + render_window * windows + other)
            / (audio_seconds * args.batch),
            4,
        )
        for s in args.project.split(",")
    }
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {
        "config": args.config,
        "device": device_name,
        "threads": torch.get_num_threads(),
        "dtype": _dtype_label(args, device),
        "official_way": args.official_way,
        "vocoder": "chunked"
        if args.official_way or not args.whole_window_vocoder
        else "whole window",
        "window_codes": config.window.window_codes,
        "hop_codes": config.window.hop_codes,
        "batch": args.batch,
        "codes_per_item": n_codes,
        "audio_seconds_per_item": audio_seconds,
        "windows": windows,
        "measured": measured,
        "estimator_s_per_step_per_window": round(per_step_window, 4),
        "render_s_per_window": round(render_window, 3),
        "projected_rtf": projected,
        "note": "rtf = wall / audio seconds (batch included); < 1 is faster than real time",
        "load": load_json(loads),
    }
    if args.pairs:
        paired = measure_pairs(
            lambda: _decode(decoder, codes, step_counts[0], {**changes, "official_way": True}),
            lambda: _decode(decoder, codes, step_counts[0], {**changes, "official_way": False}),
            args.pairs,
            warmup=warmup,
        )
        result["official_way_over_ours"] = {"steps": step_counts[0], **paired.to_dict(cpu=True)}
        loads += paired.loads
    warn_if_noisy(loads)
    return result
