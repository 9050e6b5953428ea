"""48 kHz <-> model rate: a sine keeps its frequency and level through the round trip."""

from __future__ import annotations

import math

import pytest
import torch

from audio_codecs.dac.resample import RESAMPLER

LEVEL_DB_TOLERANCE = 0.05  # dB; the resampler's passband ripple is far below this.
EDGE = 4800  # Samples at each end left out (the filter's edge effects).


def _sine(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * freq * t)).float()[None]


def _peak_frequency(x: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(x[0].double() * torch.hann_window(x.shape[-1], dtype=torch.float64))
    return float(spectrum.abs().argmax()) * rate / x.shape[-1]


def _rms_db(x: torch.Tensor) -> float:
    return 20 * math.log10(float(x[..., EDGE:-EDGE].double().pow(2).mean().sqrt()))


@pytest.mark.parametrize("rate", [44100, 24000, 16000])
@pytest.mark.parametrize("freq", [440.0, 3000.0])
def test_a_sine_survives_the_round_trip(rate: int, freq: float) -> None:
    sine = _sine(freq, 48000)
    model_rate = RESAMPLER.to_model_rate(sine, rate)
    back = RESAMPLER.to_pipeline_rate(model_rate, rate)

    assert model_rate.shape[-1] == rate and back.shape[-1] == 48000
    assert _peak_frequency(model_rate, rate) == pytest.approx(freq, abs=1.0)
    assert _peak_frequency(back, 48000) == pytest.approx(freq, abs=1.0)
    assert abs(_rms_db(back) - _rms_db(sine)) < LEVEL_DB_TOLERANCE
    assert abs(_rms_db(model_rate) - _rms_db(sine)) < LEVEL_DB_TOLERANCE


def test_above_the_model_nyquist_is_removed() -> None:
    tone = _sine(12000.0, 48000)  # Above 8 kHz, the Nyquist frequency at 16 kHz.
    assert _rms_db(RESAMPLER.to_model_rate(tone, 16000)) < _rms_db(tone) - 40
