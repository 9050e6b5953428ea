"""The official compress/decompress (loudness, gains, windows, DACFile) on DacModel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_codecs.dac.compress import compress, decompress, window_plan
from audio_codecs.dac.dac_file import read_dac_file
from audio_codecs.dac.loudness import integrated_loudness
from tests.audio_codecs.dac.conftest import GoldenSet

CASES = {"compress_chunked": "stereo_long", "compress_unchunked": "stereo_short"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_compress_matches_the_official_file_and_gains(golden_set: GoldenSet, case: str) -> None:
    out, facts = golden_set.outputs, golden_set.cases["cases"][case]
    audio = golden_set.inputs[CASES[case]][None]  # [1, 2, n]

    result = compress(golden_set.model, golden_set.config, audio)
    file = result.file

    assert file.codes.dtype == np.uint16
    assert list(file.codes.shape) == facts["codes_shape"]
    assert np.array_equal(file.codes.astype(np.int64), out[f"{case}.codes"].numpy())
    torch.testing.assert_close(
        torch.from_numpy(file.input_db), out[f"{case}.input_db"], atol=1e-4, rtol=0
    )
    torch.testing.assert_close(result.gain, out[f"{case}.gain"], rtol=1e-5, atol=0)
    torch.testing.assert_close(result.peak_gain, out[f"{case}.peak_gain"], rtol=1e-6, atol=0)
    rescaled = [c for c in range(2) if result.peak_gain[0, c, 0] != 1]
    assert rescaled == facts["ensure_max_rescaled_channels"]

    fields = facts["dacfile"]
    for name in ("chunk_length", "original_length", "channels", "sample_rate", "padding"):
        assert getattr(file, name) == fields[name], name
    assert file.dac_version == fields["dac_version"]
    assert file.input_db.tolist() == pytest.approx(fields["input_db"], abs=1e-4)

    window, spacing, delay = window_plan(golden_set.config, audio.shape[-1], 1.0)
    assert (window, spacing, delay) == (
        facts["window_samples"],
        facts["window_hop_samples"],
        facts["delay"],
    )
    assert file.codes.shape[-1] == facts["n_windows"] * file.chunk_length

    audio_out = decompress(golden_set.model, golden_set.config, file)
    assert list(audio_out.shape) == facts["decompress_shape"]
    torch.testing.assert_close(audio_out, out[f"{case}.decompress"], atol=5e-5, rtol=0)


def test_loudness_is_the_official_meters_bit_for_bit(golden_set: GoldenSet) -> None:
    for case, signal in CASES.items():
        measured = integrated_loudness(
            golden_set.inputs[signal][None], golden_set.config.sample_rate
        )
        assert torch.equal(measured, golden_set.outputs[f"{case}.input_db"])


def test_silence_measures_the_floor(golden_set: GoldenSet) -> None:
    silence = torch.zeros(1, 2, golden_set.config.sample_rate)
    assert integrated_loudness(silence, golden_set.config.sample_rate).item() == -70.0


def test_the_official_dac_file_reads_back_safely(golden_set: GoldenSet) -> None:
    file = read_dac_file(golden_set.dac_file)
    fields = golden_set.cases["cases"]["compress_chunked"]["dacfile"]
    assert file.codes.dtype == np.uint16
    assert np.array_equal(file.codes.astype(np.int64), golden_set.outputs["compress_chunked.codes"])
    assert file.input_db.dtype == np.float32
    assert file.input_db.tolist() == fields["input_db"]
    for name in ("chunk_length", "original_length", "channels", "sample_rate", "padding"):
        assert getattr(file, name) == fields[name], name
    assert file.dac_version == "1.0.0"

    audio = decompress(golden_set.model, golden_set.config, file)
    torch.testing.assert_close(
        audio, golden_set.outputs["compress_chunked.decompress"], atol=5e-5, rtol=0
    )
