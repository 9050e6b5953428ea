"""Spectrogram pictures for the spot-check report: one log-mel picture per audio."""

from __future__ import annotations

import io

import torch
import torchaudio

SAMPLE_RATE = 48_000
_MEL = torchaudio.transforms.MelSpectrogram(
    sample_rate=SAMPLE_RATE, n_fft=2048, hop_length=480, n_mels=128, f_max=SAMPLE_RATE / 2
)


def log_mel(audio: torch.Tensor) -> torch.Tensor:
    """`[channels, samples]` -> `[128, frames]` dB of the mono mix."""
    mel = _MEL(audio.float().mean(dim=0))
    return 10 * torch.log10(mel.clamp(min=1e-10))


def mel_png(audio: torch.Tensor, title: str, high: float | None = None) -> bytes:
    """One log-mel spectrogram as PNG bytes, for the report's side-by-side row.

    Args:
        audio: `[channels, samples]` at 48 kHz.
        title: Shown above the picture.
        high: The top of the 80 dB colour scale (default: this audio's loudest bin); a
            reconstruction is drawn on its original's scale, so level changes show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mel = log_mel(audio)
    high = float(mel.max()) if high is None else high
    seconds = audio.shape[-1] / SAMPLE_RATE
    figure, axis = plt.subplots(figsize=(4.2, 2.4))
    axis.imshow(
        mel.numpy(), origin="lower", aspect="auto", cmap="magma",
        vmin=high - 80, vmax=high, extent=(0, seconds, 0, mel.shape[0]),
    )  # fmt: skip
    axis.set_title(title, fontsize=8)
    axis.set_xlabel("seconds", fontsize=8)
    axis.set_ylabel("mel band", fontsize=8)
    axis.tick_params(labelsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
