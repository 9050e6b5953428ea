"""Where a tokenize run's time goes: the steady rate apart from the fixed costs."""

from __future__ import annotations

import pytest

from pipeline.shard_reader import SAMPLE, SHARD_END
from pipeline.tokenize.rows import ChainRow
from pipeline.tokenize.timing import CodecClock, StageTiming, steady_rate


def codec_row(encoded_at: float, kind: str = SAMPLE, error: str = "") -> ChainRow:
    return ChainRow(
        kind=kind, shard="a.tar", key="k", error=error, shard_rows=0, song_id="s",
        segment_index=0, start_s=0.0, duration_s=35.84, lyrics_aligned=False, lyrics="[]",
        lyrics_text="", source="x.wav", source_sha256="", split="train", artist="", quality="",
        song_quality="", codes=b"", n_codebooks=1,
        n_frames=0, codebook_size=16, scales=[], chunk_frames=[], input_db=0.0,
        tokenizer="mucodec", tokenizer_config="", encoder_layer=-1, checkpoint_sha256="",
        token_rate=25.0, code_version="test", codec_preset="tiny", codec_mode="encode",
        sample_rate=48_000, channels=1, bitrate_kbps=0.35, read_s=0.03, staging_s=0.002,
        device_s=0.01, load_s=1.5, encoded_at=encoded_at,
    )  # fmt: skip


def test_the_steady_rate_leaves_out_the_backlog_drained_at_the_start():
    # 40 segments drained at once from a backlog when the actor came up, then 2 per second.
    times = [100.0] * 40 + [100.0 + 0.5 * i for i in range(1, 41)]
    assert steady_rate(times) == pytest.approx(2.0)
    assert steady_rate([]) == 0.0 and steady_rate([5.0, 5.0]) == 0.0


def test_the_timing_splits_fixed_costs_from_the_rate_and_costs_per_segment():
    clock = CodecClock()
    for index in range(20):
        clock.saw(codec_row(10.0 + index))  # One segment per second from t=10 to t=29.
    clock.saw(codec_row(0.0, kind=SHARD_END))  # Counted for nothing but the actor's load.
    clock.saw(codec_row(0.0, error="bad flac"))
    clock.timed(lambda: None)
    timing = StageTiming.of(clock, started=0.0, flowing=2.0, ended=31.0)
    assert timing.steady_segments_per_second == pytest.approx(1.0)
    assert timing.fixed_seconds == pytest.approx(31.0 - 20.0)
    assert timing.fixed == {"planning": 2.0, "start_up": 8.0, "model_load": 1.5, "finish": 2.0}
    assert timing.per_segment["read_decode"] == pytest.approx(0.03)
    assert timing.per_segment["device"] == pytest.approx(0.01)
    assert timing.per_segment["part_writing"] < 0.001


def test_one_batch_gives_no_rate_and_all_its_time_is_fixed():
    clock = CodecClock()
    for _ in range(8):
        clock.saw(codec_row(5.0))
    timing = StageTiming.of(clock, started=0.0, flowing=1.0, ended=6.0)
    assert timing.steady_segments_per_second == 0.0 and timing.fixed_seconds == 6.0
    assert timing.fixed["start_up"] == 4.0 and timing.per_segment["staging"] > 0


def test_a_run_with_nothing_to_do_is_all_fixed_cost():
    timing = StageTiming.of(CodecClock(), started=0.0, flowing=1.0, ended=3.0)
    assert timing.steady_segments_per_second == 0.0 and timing.fixed_seconds == 3.0
