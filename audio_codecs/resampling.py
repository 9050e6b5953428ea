"""48 kHz pipeline audio <-> a codec model's rate, with torchaudio's Hann-windowed sinc.

The filter's width and roll-off define the result, so each codec names its own
`SincResampler` beside the reason for its values (`audio_codecs.dac.resample`,
`audio_codecs.encodec.signal`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torchaudio.functional as taf
from torch import Tensor

from audio_codecs.base import PIPELINE_SAMPLE_RATE


@dataclass(frozen=True)
class SincResampler:
    """`torchaudio.functional.resample` with `sinc_interp_hann` and these settings.

    Attributes:
        lowpass_filter_width: Zero crossings of the sinc on each side.
        rolloff: Cut-off as a fraction of the lower Nyquist frequency.
    """

    lowpass_filter_width: int
    rolloff: float

    def resample(self, audio: Tensor, from_rate: int, to_rate: int) -> Tensor:
        """Resamples `[..., n]` along the last axis; a no-op at equal rates.

        Returns:
            `[..., ceil(n * to_rate / from_rate)]`.
        """
        if from_rate == to_rate:
            return audio
        return taf.resample(
            audio,
            from_rate,
            to_rate,
            lowpass_filter_width=self.lowpass_filter_width,
            rolloff=self.rolloff,
            resampling_method="sinc_interp_hann",
        )

    def to_model_rate(self, audio: Tensor, model_rate: int) -> Tensor:
        """Pipeline audio (48 kHz) to the model rate."""
        return self.resample(audio, PIPELINE_SAMPLE_RATE, model_rate)

    def to_pipeline_rate(self, audio: Tensor, model_rate: int) -> Tensor:
        """Model-rate audio back to 48 kHz."""
        return self.resample(audio, model_rate, PIPELINE_SAMPLE_RATE)
