"""48 kHz <-> the DAC model's rate, with torchaudio's windowed-sinc resampler.

`torchaudio.functional.resample` with its defaults, stated here because they define the
result: `resampling_method="sinc_interp_hann"`, `lowpass_filter_width=6` (zero crossings
per side), `rolloff=0.99` (cut-off at 99 % of the lower Nyquist). The official tool
resamples with `julius.resample_frac` (also a windowed sinc); julius is not a dependency.
Within the passband a sine keeps its frequency exactly and its level to well under 0.1 dB
through a round trip (tests/audio_codecs/dac/test_resample.py).
"""

from audio_codecs.resampling import SincResampler

RESAMPLER = SincResampler(lowpass_filter_width=6, rolloff=0.99)
