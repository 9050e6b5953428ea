"""Encoder: our tokenizer on 35.84 s segments vs a naive run of the official tiling.

    python -m jobs.bench encoder --segments 3 --device cpu            # CPU, fp32
    python -m jobs.bench encoder --segments 64 --batch-size 16 --device cuda --precision bfloat16

Both sides use the full-size `official` config with random weights, on the same machine in
one run, on the same audio (N segments of 35.84 s of noise-like music, back to back):

* ours: `MuCodecTokenizer.encode_padded` on the N segments (front end, subsampling, the 6
  blocks layer_results[6] needs, RVQ), in batches of --batch-size, in --precision; on the CPU
  in float32 its subsampling takes the Winograd road (mucodec/encoder/subsampling.py);
* naive: what the official script computes for that audio as one song: its 40.96 s window
  tiling (repeated audio included), the whole 12-block stack plus the final LayerNorm,
  float32, batches of 3 windows, the subsampling's direct convolutions and BatchNorms.

The two alternate in --pairs pairs (jobs/benchmarks/paired.py). Reported: each side's
median wall and CPU seconds, the median of the per-pair ratios naive / ours on the same
audio (wall and CPU time) and per audio second (which ignores the tiling's repeated audio)
with their spread and the load average, segments/second, and model FLOP/s (counted
analytically, direct-convolution FLOPs on both sides) as a fraction of --peak-tflops (auto
for H100/H200). On the CPU in float32, ours is run once more with the direct convolutions
and the fraction of equal codes is reported (`codes_equal_to_direct_convolution`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import statistics
from collections.abc import Callable
from typing import Any

import torch

from jobs.benchmarks.paired import (
    Clocks,
    Load,
    PairedResult,
    load_json,
    measure_pairs,
    spread,
    warn_if_noisy,
)
from mucodec.encoder.config import PRESETS, TokenizerConfig, preset
from mucodec.encoder.frontend import normalise_song
from mucodec.encoder.tiling import WINDOW, sound2code_windows
from mucodec.encoder.tokenizer import MuCodecTokenizer

SEGMENT_SAMPLES = int(35.84 * 48000)
# Dense bf16 tensor-core peaks (TFLOP/s) by device-name fragment.
KNOWN_PEAKS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the encoder benchmark's options to its subcommand's `parser`."""
    parser.add_argument("--segments", type=int, default=3, help="35.84 s segments (default 3)")
    parser.add_argument("--batch-size", type=int, default=3, help="our segments per batch")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--precision",
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="our precision (--dtype: its former name)",
    )
    # An unknown name is refused by argparse here, not by preset()'s ValueError mid-run.
    parser.add_argument("--preset", default="official", choices=sorted(PRESETS),
                        help="tokenizer preset (default official)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument(
        "--warmup", type=int, default=-1, help="untimed warm-up pairs (-1: GPU 1, CPU 0)"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive official run")
    parser.add_argument(
        "--agreement",
        action="store_true",
        help="with --precision bfloat16, also encode in float32 and report token agreement",
    )
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="peak for the FLOP fraction")
    parser.add_argument(
        "--pairs",
        type=int,
        default=3,
        help="timed naive / ours pairs; the median ratio is quoted (default 3; with "
        "--no-baseline ours runs once)",
    )
    parser.add_argument("--seed", type=int, default=0)


def encoder_flops(config: TokenizerConfig, tokens: int, blocks: int, final_norm: bool) -> float:
    """Model FLOPs (2 x multiply-adds) of the encoder and RVQ for one item of `tokens` frames.

    Counts the convolutions, linear layers, attention matmuls and the code lookup;
    normalisations and activations are ignored (well under 1 %).
    """
    enc, rvq = config.encoder, config.quantizer
    frames, mels, conv = 4 * tokens, enc.n_mels, enc.conv_dim
    macs = 0.0
    # Subsampling block 0 (1 -> C at M/2 x F/2) and block 1 (C -> C at M/4 x F/4).
    macs += 2 * conv * 9 * (mels // 2) * (frames // 2)  # conv1, conv3 of block 0
    macs += conv * conv * 9 * (mels // 2) * (frames // 2)  # conv2 of block 0
    macs += 3 * conv * conv * 9 * (mels // 4) * (frames // 4)  # conv1..3 of block 1
    macs += tokens * conv * (mels // 4) * enc.dim  # flatten projection
    dim, ffn = enc.dim, enc.ffn_dim
    per_block = tokens * (2 * 2 * dim * ffn + 4 * dim * dim + 3 * dim * dim)
    per_block += tokens * dim * enc.depthwise_kernel_size
    per_block += 2 * tokens * tokens * dim  # scores and weighted sum
    macs += blocks * per_block
    macs += (
        rvq.n_codebooks
        * tokens
        * (2 * dim * rvq.codebook_dim + rvq.codebook_size * rvq.codebook_dim)
    )
    return 2.0 * macs


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_music(segments: int, seed: int) -> torch.Tensor:
    """Stereo test music: decaying tones on a beat plus noise, [2, segments x 35.84 s]."""
    generator = torch.Generator().manual_seed(seed)
    samples = segments * SEGMENT_SAMPLES
    t = torch.arange(samples, dtype=torch.float64) / 48000.0
    pitch = 110.0 * 2 ** (torch.floor(t * 2) % 12 / 12.0)
    envelope = torch.exp(-4.0 * (t % 0.5))
    tone = (torch.sin(2 * math.pi * pitch * t) * envelope * 0.4).float()
    return tone + 0.05 * torch.randn(2, samples, generator=generator)


def _run_batches(
    encode: Callable[[torch.Tensor], object], batches: list[torch.Tensor], device: torch.device
) -> None:
    """Encode every batch on `device` and wait for it: a timing must include the device."""
    for batch in batches:
        encode(batch.to(device, non_blocking=True))
    _synchronize(device)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Times our encoder against the reference on the same audio, as `args` says.

    Returns:
        The benchmark's JSON-ready result (seconds, speedups, the load).
    """
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warmup = args.warmup if args.warmup >= 0 else (1 if device.type == "cuda" else 0)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    config = preset(args.preset)
    tokenizer = MuCodecTokenizer.from_config(config, seed=args.seed, precision=args.precision)
    tokenizer = tokenizer.to(device)

    audio = bench_music(args.segments, args.seed)  # [2, N x 35.84 s]
    segments = audio.reshape(2, args.segments, SEGMENT_SAMPLES).transpose(0, 1)
    batches = list(segments.split(args.batch_size))
    codes: list[torch.Tensor] = []

    def ours() -> None:
        codes.clear()
        _run_batches(
            lambda b: codes.append(tokenizer.encode_padded(b).codes.cpu()), batches, device
        )

    naive = None if args.no_baseline else _Naive(config, audio, device, args.seed)
    if naive is None:
        for _ in range(warmup):
            ours()
        loads = [Load.now()]
        timing = Clocks().measure(ours)
        loads.append(Load.now())
        ours_s, ours_cpu = timing.wall_s, timing.cpu_s
    else:
        paired = measure_pairs(naive.run, ours, args.pairs, warmup=warmup)
        loads = paired.loads
        ours_s = statistics.median(paired.seconds("ours"))
        ours_cpu = statistics.median(paired.seconds("ours", cpu=True))
    tokens = SEGMENT_SAMPLES // 1920
    ours_flops = args.segments * encoder_flops(config, tokens, config.encoder.n_blocks_run, False)

    result: dict[str, Any] = {
        "machine": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "config": config.name,
        "segments": args.segments,
        "audio_seconds": round(args.segments * 35.84, 2),
        "ours": {
            "dtype": args.precision,
            "batch_size": args.batch_size,
            "blocks_run": config.encoder.n_blocks_run,
            "seconds": round(ours_s, 3),
            "cpu_seconds": round(ours_cpu, 3),
            "segments_per_second": round(args.segments / ours_s, 3),
            "frames_per_segment": int(codes[0].shape[-1]),
            "model_tflop_per_s": round(ours_flops / ours_s / 1e12, 3),
        },
    }
    peak = args.peak_tflops or next(
        (p for k, p in KNOWN_PEAKS.items() if k in result["machine"]["device"]), 0.0
    )
    if peak:
        result["ours"]["fraction_of_peak"] = round(ours_flops / ours_s / 1e12 / peak, 4)
        result["ours"]["peak_tflops"] = peak

    if args.precision != "float32" and args.agreement:
        # The same weights at float32: the parts are shared, the precision is the new one's.
        float32 = MuCodecTokenizer(
            config,
            frontend=tokenizer.frontend,
            encoder=tokenizer.encoder,
            quantizer=tokenizer.quantizer,
        )
        reference = [float32.encode_padded(b.to(device)).codes.cpu() for b in batches]
        result["ours"]["token_agreement_vs_float32"] = _agreement(codes, reference)
    if device.type == "cpu" and args.precision == "float32":
        # Our CPU float32 road convolves by Winograd, a different rounding of the same sums:
        # count the codes it moves against the direct convolutions.
        tokenizer.encoder.subsampling.use_winograd = False
        reference = [tokenizer.encode_padded(b.to(device)).codes.cpu() for b in batches]
        tokenizer.encoder.subsampling.use_winograd = True
        result["ours"]["codes_equal_to_direct_convolution"] = _agreement(codes, reference)

    if naive is None:
        result["load"] = load_json(loads)
    else:
        result["naive_official_tiling"] = naive.summary(paired)
        result["speedup_same_audio"] = paired.to_dict(cpu=True)
        # Per audio second = same-audio ratio x audio / computed audio, a constant factor.
        computed_share = audio.shape[-1] / (naive.windows.shape[0] * WINDOW)
        result["speedup_per_audio_second"] = spread([r * computed_share for r in paired.ratios])
    warn_if_noisy(loads)
    return result


def _agreement(codes: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """Fraction of equal codes between two runs over the same batches."""
    same = sum(int((a == b).sum()) for a, b in zip(codes, reference, strict=True))
    return round(same / sum(a.numel() for a in codes), 5)


class _Naive:
    """The official script's computation, as the baseline of the speedup.

    All 12 blocks and the final LayerNorm, in fp32, over batches of 3 windows of its tiling
    (repeated audio included).
    """

    def __init__(
        self, config: TokenizerConfig, audio: torch.Tensor, device: torch.device, seed: int
    ) -> None:
        encoder = dataclasses.replace(config.encoder, output_layer=config.encoder.depth)
        self.config = dataclasses.replace(config, encoder=encoder)
        self.model = MuCodecTokenizer.from_config(self.config, seed=seed).to(device)
        self.model.encoder.subsampling.use_winograd = False  # the official arithmetic
        song = normalise_song(audio, config.frontend.song_peak_threshold)
        self.windows = sound2code_windows(song)  # [W, 2, 1,966,560]
        self.device = device

    def run(self) -> None:
        _run_batches(self.model.encode_padded, list(self.windows.split(3)), self.device)

    def summary(self, paired: PairedResult) -> dict[str, Any]:
        """What the naive side computed, and its median times over the pairs."""
        seconds = statistics.median(paired.seconds("baseline"))
        count = int(self.windows.shape[0])
        tokens = (WINDOW // 2) // 960
        flops = count * encoder_flops(self.config, tokens, self.config.encoder.depth, True)
        return {
            "windows": count,
            "computed_audio_seconds": round(count * WINDOW / 48000.0, 2),
            "blocks_run": self.config.encoder.depth,
            "dtype": "float32",
            "batch_size": 3,
            "seconds": round(seconds, 3),
            "cpu_seconds": round(statistics.median(paired.seconds("baseline", cpu=True)), 3),
            "model_tflop_per_s": round(flops / seconds / 1e12, 3),
        }
