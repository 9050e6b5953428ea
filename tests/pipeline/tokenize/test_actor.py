"""The tokenizer actor: PCM read without copies, staged once, encoded as the codec would."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_codecs.registry import load_codec
from pipeline.shard_reader import SAMPLE, SHARD_END, ShardSampleRow
from pipeline.tokenize.actor import TokenizeBatch, chain_rows
from pipeline.tokenize.device_memory import MOST, fitting_batch, probe_batch
from pipeline.tokenize.rows import ChainRow
from tests.pipeline.conftest import TINY_MUCODEC

SECONDS = (3.0, 2.5, 3.0, 1.5, 3.0)


def shard_batch() -> tuple[list[np.ndarray], list[ShardSampleRow]]:
    rng = np.random.default_rng(0)
    audio = [rng.integers(-8000, 8000, (round(s * 48_000), 2), dtype=np.int16) for s in SECONDS]
    rows = [
        ShardSampleRow(SAMPLE, "a.tar", f"k{i}", pcm=pcm.tobytes(), n_samples=len(pcm),
                       duration_s=len(pcm) / 48_000, song_peak=0.5 + 0.1 * i, gain=0.8 + 0.1 * i)
        for i, pcm in enumerate(audio)
    ]  # fmt: skip
    return audio, [*rows, ShardSampleRow(SHARD_END, "a.tar", shard_rows=len(rows))]


def test_chain_rows_view_the_batchs_own_pcm_buffer():
    audio, rows = shard_batch()
    batch = ShardSampleRow.to_table(rows)
    data = batch.column("pcm").chunks[0].buffers()[2]
    views = [row.pcm for row in chain_rows(batch)]
    for view, pcm in zip(views, audio, strict=False):
        assert np.array_equal(np.frombuffer(view, np.int16).reshape(-1, 2), pcm)
        address = np.frombuffer(view, np.uint8).ctypes.data
        assert data.address <= address < data.address + data.size  # A view, not a copy.
    assert len(views[-1]) == 0  # The shard's end row has no audio.


@pytest.fixture(scope="module")
def actor() -> TokenizeBatch:
    return TokenizeBatch(TINY_MUCODEC, device="cpu")


def test_the_actor_gives_the_codes_of_the_codec_on_float_audio(actor):
    audio, rows = shard_batch()
    table = actor(ShardSampleRow.to_table(rows))
    out = [r for r in ChainRow.from_table(table) if r.usable]
    codec = load_codec(TINY_MUCODEC, torch.device("cpu"))
    floats = [torch.from_numpy(pcm.T.astype(np.float32) / 32768) for pcm in audio]
    expected = codec.encode(floats, song_peaks=[r.song_peak for r in rows[:-1]],
                            gains=[r.gain for r in rows[:-1]])  # fmt: skip
    for row, want in zip(out, expected, strict=True):
        assert np.array_equal(row.decode_codes(), want.codes)
        assert row.staging_s > 0 and row.device_s > 0 and row.encoded_at > 0
        assert row.load_s == actor.load_seconds > 0
    end = [r for r in ChainRow.from_table(table) if r.kind == SHARD_END]
    assert [(r.staging_s, r.device_s, r.encoded_at) for r in end] == [(0.0, 0.0, 0.0)]


def test_a_batch_split_into_smaller_encode_calls_gives_the_same_codes(actor):
    _, rows = shard_batch()
    usable = [ChainRow.audio(r) for r in rows if r.usable]
    whole = actor._encode(usable)
    actor.encode_batch = 2  # What a GPU's memory would allow: three calls here.
    try:
        split = actor._encode(usable)
    finally:
        actor.encode_batch = None
    assert all(np.array_equal(a.codes, b.codes) for a, b in zip(whole, split, strict=True))


def test_the_batch_fits_the_share_of_free_memory():
    unit = 2**28  # 256 MiB
    # One segment peaks at 3 units, two at 4: one unit per segment on 2 units of fixed need.
    # Half of 400 units, less 20% headroom, is 160: 158 after the fixed need.
    assert fitting_batch(3 * unit, 4 * unit, free=400 * unit, share=0.5) == 158
    assert fitting_batch(3 * unit, 4 * unit, free=4 * unit, share=0.5) == 1
    assert fitting_batch(0, 1, free=400 * unit, share=1.0) == MOST


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_probe_measures_a_batch_that_fits_on_the_gpu():
    codec = load_codec(TINY_MUCODEC, torch.device("cuda"))
    assert 1 <= probe_batch(codec, share=0.5, samples=48_000) <= MOST
