"""`python -m jobs.bench gpu`: refuses without CUDA, documents every figure, tabulates them.

The figures themselves need a GPU; `--smoke` runs the same wiring on the CPU in a few
minutes (too slow for this suite: run it by hand after changing a benchmark's output).
"""

from __future__ import annotations

import pytest

from jobs import bench
from jobs.benchmarks import gpu


def test_without_cuda_it_refuses_with_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stopped:
        bench.main(["gpu"])
    printed = capsys.readouterr()
    assert stopped.value.code == 2
    assert printed.out == ""
    lines = printed.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "CUDA" in lines[0]


def test_help_documents_every_figure(capsys) -> None:
    with pytest.raises(SystemExit) as finished:
        bench.main(["gpu", "--help"])
    assert finished.value.code == 0
    completed = capsys.readouterr()
    for figure in (
        "segments of 35.84 s per",
        "MFU",
        "tokens equal to fp32",
        "peak GPU memory",
        "hours of audio per GPU-hour",
        "50 and 20 Euler",
        "official way",
        "--smoke",
    ):
        assert figure in " ".join(completed.out.split()), figure  # fmt: skip


def test_the_table_names_every_figure_and_where_it_comes_from() -> None:
    ours = {"segments_per_second": 12.5, "fraction_of_peak": 0.31}
    figures = {
        "encoder_fp32": {"machine": {"device": "NVIDIA H200"}, "ours": ours},
        "encoder_bf16": {"ours": {**ours, "token_agreement_vs_float32": 0.97}},
        "encoder_memory": {"peak_mib_by_batch_size": {"1": 900, "64": 30000}},
        "tokenize": {
            "stage_steady_segments_per_s": 10.0,
            "steady_over_bare": 0.93,
            "steady_audio_hours_per_hour": 4000.0,
            "stage_fixed_s": {"start_up": 9.5},
            "encode_batch": 96,
        },
        "tokenize_dac": {"stage_steady_segments_per_s": 20.0, "steady_over_bare": 0.91},
        "tokenize_encodec": {"stage_steady_segments_per_s": 30.0, "steady_over_bare": 0.95},
        "decoder": {
            "measured": {50: {"rtf": 0.05}, 20: {"rtf": 0.02}},
            "official_way_over_ours": {"steps": 50, "median": 3.1},
        },
        "total_seconds": 400.0,
    }

    lines = gpu.markdown_table(figures).splitlines()

    assert lines[:2] == ["| figure | value | measured by |", "|---|---|---|"]
    assert "| device | NVIDIA H200 | `-` |" in lines
    assert "| bf16 tokens equal to fp32 | 0.97 | `jobs.bench encoder --agreement` |" in lines
    assert "| encoder bf16 peak memory, batch 64 (MiB) | 30000 | `encoder_memory` |" in lines
    assert "| tokenize stage steady / bare | 0.93 | `jobs.bench tokenize` |" in lines
    # The stage's steady rate against the bf16 encoder alone (12.5 segments/s) in the same run.
    assert "| tokenize stage steady / encoder alone (bf16) | 0.8 | " in " ".join(lines)
    assert "| decoder RTF, 20 steps (ours, bf16) | 0.02 | `jobs.bench decoder` |" in lines
    assert any("official way / ours at 50 steps" in line and "| 3.1 |" in line for line in lines)
    assert "| tokenize dac, steady segments/s; steady / bare | 20.0; 0.91 | " in " ".join(lines)
    assert len(lines) == 2 + 20  # 6 encoder, 2 memory, 8 tokenize, 3 decoder, total time.
