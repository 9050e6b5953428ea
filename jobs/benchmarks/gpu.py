"""Every GPU figure of the project in one command, at full size with random weights.

    python -m jobs.bench gpu                       # one GPU, under 8 minutes
    python -m jobs.bench gpu --output gpu-figures.md

The figures, each measured by the benchmark named, one after the other in this process:

* encoder fp32 and bf16 (`jobs.bench encoder`, official config): segments of 35.84 s per
  second, model TFLOP/s and its fraction of the GPU's dense bf16 peak (MFU), and the share
  of bf16 tokens equal to fp32 tokens from the same weights;
* encoder memory: peak GPU memory allocated while encoding a batch, per batch size, bf16;
* tokenize (`jobs.bench tokenize`, official config, bf16, 1,000 segments: copies of a
  small corpus prepared once on every core): the whole stage (shards to Parquet on Ray
  Data, one actor per GPU, encode calls fitted to its memory) at its steady rate, its fixed
  costs apart, against the bare tokenizer on the same segments and against the encoder
  alone (the bf16 figure above), and hours of audio per GPU-hour;
* the same for DAC (44 kHz) and EnCodec (48 kHz), bf16, on the same corpus;
* decoder (`jobs.bench decoder`, official config): real-time factor at 50 and 20 Euler
  steps, ours (bf16, batched) and the official way (fp16 autocast estimator, one item at a
  time, chunked vocoder) in the same run, median of paired ratios.

It writes a Markdown table ready for docs/benchmarks.md (--output) and prints the full JSON.
Without CUDA it refuses with one line; --smoke runs the same wiring on the CPU with tiny
presets and small sizes, which tests the command and measures nothing worth quoting.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from types import ModuleType
from typing import Any

import torch

from jobs.benchmarks import decoder, encoder, tokenize
from mucodec.encoder.config import preset
from mucodec.encoder.tokenizer import MuCodecTokenizer

# Full size on one GPU, sized to finish within 8 minutes together; --smoke: tiny on CPU.
SIZES = {
    "full": {
        "encoder_fp32": ["--segments", "32", "--batch-size", "16", "--no-baseline"],
        "encoder_bf16": ["--segments", "64", "--batch-size", "32", "--no-baseline",
                         "--agreement"],
        "memory_batches": [1, 8, 32, 64],
        "tokenize": ["--config", "official", "--precision", "bfloat16", "--segments", "1000",
                     "--pairs", "1"],
        "tokenize_dac": ["--codec", "dac", "--config", "44khz_8kbps", "--precision",
                         "bfloat16", "--segments", "1000", "--pairs", "1"],
        "tokenize_encodec": ["--codec", "encodec", "--config", "48khz", "--precision",
                             "bfloat16", "--segments", "1000", "--pairs", "1"],
        "decoder": ["--config", "official", "--precision", "bfloat16", "--steps", "50,20",
                    "--pairs", "2"],
    },
    "smoke": {
        "encoder_fp32": ["--preset", "tiny", "--segments", "2", "--batch-size", "2",
                         "--no-baseline"],
        "encoder_bf16": ["--preset", "tiny", "--segments", "2", "--batch-size", "2",
                         "--no-baseline", "--agreement"],
        "memory_batches": [1, 2],
        "tokenize": ["--config", "tiny", "--segments", "8", "--batch-size", "2", "--pairs", "1"],
        "tokenize_dac": ["--codec", "dac", "--config", "tiny", "--segments", "8",
                         "--batch-size", "2", "--pairs", "1"],
        "tokenize_encodec": ["--codec", "encodec", "--config", "tiny", "--segments", "8",
                             "--batch-size", "2", "--pairs", "1"],
        "decoder": ["--config", "tiny", "--seconds", "2", "--steps", "2,1", "--pairs", "1"],
    },
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the GPU benchmark's options to its subcommand's `parser`."""
    parser.add_argument(
        "--output", default="gpu-figures.md", help="Markdown table to write (default %(default)s)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny presets on the CPU: tests this command's wiring, measures nothing to quote",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measures every GPU figure and writes the Markdown table.

    Returns:
        The JSON-ready figures, one entry per benchmark, with the total wall time.

    Raises:
        SystemExit: with status 2 and one line, when there is no CUDA device (and no --smoke).
    """
    if not args.smoke and not torch.cuda.is_available():
        print(
            "error: jobs.bench gpu needs a CUDA device and this machine has none; the CPU "
            "figures come from `python -m jobs.bench encoder|tokenize|decoder`",
            file=sys.stderr,
        )
        raise SystemExit(2)
    sizes = SIZES["smoke" if args.smoke else "full"]
    device = "cpu" if args.smoke else "cuda"
    workdir = tempfile.mkdtemp(prefix="bench-gpu-")
    started = time.perf_counter()
    figures: dict[str, Any] = {
        "encoder_fp32": _run(encoder, [*sizes["encoder_fp32"], "--device", device]),
        "encoder_bf16": _run(
            encoder, [*sizes["encoder_bf16"], "--device", device, "--precision", "bfloat16"]
        ),
        "encoder_memory": encoder_memory(
            "tiny" if args.smoke else "official", sizes["memory_batches"], device
        ),
        # One corpus for the three codecs: made and prepared once, on every core.
        **{
            name: _run(tokenize, [*sizes[name], "--workdir", workdir])
            for name in ("tokenize", "tokenize_dac", "tokenize_encodec")
        },
        "decoder": _run(decoder, [*sizes["decoder"], "--device", device]),
    }
    shutil.rmtree(workdir, ignore_errors=True)
    figures["total_seconds"] = round(time.perf_counter() - started, 1)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.write(markdown_table(figures))
    figures["markdown"] = args.output
    return figures


def _run(module: ModuleType, argv: list[str]) -> dict[str, Any]:
    """Runs benchmark `module` with the command line `argv`, as `jobs.bench` would."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def encoder_memory(preset_name: str, batch_sizes: list[int], device: str) -> dict[str, Any]:
    """Peak GPU memory allocated while encoding one batch, per batch size (bf16).

    Args:
        preset_name: The tokenizer preset (random weights).
        batch_sizes: Segments of 35.84 s per batch to measure.
        device: "cuda" (measured) or "cpu" (the wiring only: memory is not tracked).

    Returns:
        {"batch_size -> MiB"} (None on the CPU), and the weights' own MiB.
    """
    tokenizer = MuCodecTokenizer.from_config(preset(preset_name), seed=0, precision="bfloat16")
    tokenizer = tokenizer.to(device).eval()
    cuda = device == "cuda"
    weights = sum(p.numel() * p.element_size() for p in tokenizer.parameters()) / 2**20
    peaks: dict[str, float | None] = {}
    for batch in batch_sizes:
        audio = torch.randn(batch, 2, encoder.SEGMENT_SAMPLES, device=device) * 0.1
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        tokenizer.encode_padded(audio)
        peaks[str(batch)] = round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
        del audio
    return {"weights_mib": round(weights), "peak_mib_by_batch_size": peaks}


def markdown_table(figures: dict[str, Any]) -> str:
    """The figures as a Markdown table: figure, value, and the benchmark that measured it."""
    fp32, bf16 = figures["encoder_fp32"]["ours"], figures["encoder_bf16"]["ours"]
    tokens, dec = figures["tokenize"], figures["decoder"]
    memory = figures["encoder_memory"]["peak_mib_by_batch_size"]
    rows = [
        ("device", figures["encoder_fp32"]["machine"]["device"], "-"),
        ("encoder fp32, segments/s", fp32["segments_per_second"], "jobs.bench encoder"),
        ("encoder fp32, fraction of bf16 peak", fp32.get("fraction_of_peak", "n/a"),
         "jobs.bench encoder"),
        ("encoder bf16, segments/s", bf16["segments_per_second"], "jobs.bench encoder"),
        ("encoder bf16, fraction of bf16 peak (MFU)", bf16.get("fraction_of_peak", "n/a"),
         "jobs.bench encoder"),
        ("bf16 tokens equal to fp32", bf16.get("token_agreement_vs_float32", "n/a"),
         "jobs.bench encoder --agreement"),
        *((f"encoder bf16 peak memory, batch {b} (MiB)", mib, "encoder_memory")
          for b, mib in memory.items()),
        ("tokenize stage, steady segments/s", tokens["stage_steady_segments_per_s"],
         "jobs.bench tokenize"),
        ("tokenize stage steady / encoder alone (bf16)",
         round(tokens["stage_steady_segments_per_s"] / bf16["segments_per_second"], 3),
         "jobs.bench tokenize, encoder"),
        ("tokenize stage steady / bare", tokens["steady_over_bare"], "jobs.bench tokenize"),
        ("tokenize, steady hours of audio per GPU-hour", tokens["steady_audio_hours_per_hour"],
         "jobs.bench tokenize"),
        ("tokenize, fixed costs (s)", tokens["stage_fixed_s"], "jobs.bench tokenize"),
        ("tokenize, encode call batch (fitted to memory)", tokens["encode_batch"],
         "jobs.bench tokenize"),
        *((f"tokenize {name}, steady segments/s; steady / bare",
           f"{figures[key]['stage_steady_segments_per_s']}; {figures[key]['steady_over_bare']}",
           f"jobs.bench tokenize --codec {name}")
          for name, key in (("dac", "tokenize_dac"), ("encodec", "tokenize_encodec"))),
        *((f"decoder RTF, {steps} steps (ours, bf16)", m["rtf"], "jobs.bench decoder")
          for steps, m in dec["measured"].items()),
        (f"decoder official way / ours at {dec['official_way_over_ours']['steps']} steps "
         "(median of pairs)", dec["official_way_over_ours"]["median"],
         "jobs.bench decoder --pairs"),
        ("total wall time (s)", figures["total_seconds"], "jobs.bench gpu"),
    ]  # fmt: skip
    lines = ["| figure | value | measured by |", "|---|---|---|"]
    lines += [f"| {name} | {value} | `{source}` |" for name, value, source in rows]
    return "\n".join(lines) + "\n"
