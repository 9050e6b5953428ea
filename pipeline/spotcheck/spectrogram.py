"""Spectrogram pictures for the spot-check report: original above reconstruction."""

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


def spectrogram_png(original: torch.Tensor, reconstruction: torch.Tensor, title: str) -> bytes:
    """Two log-mel spectrograms on one colour scale, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top, bottom = log_mel(original), log_mel(reconstruction)
    high = float(max(top.max(), bottom.max()))
    seconds = original.shape[-1] / SAMPLE_RATE
    figure, axes = plt.subplots(2, 1, figsize=(9, 4.6), sharex=True)
    for axis, mel, name in ((axes[0], top, "original"), (axes[1], bottom, "reconstruction")):
        image = axis.imshow(
            mel.numpy(), origin="lower", aspect="auto", cmap="magma",
            vmin=high - 80, vmax=high, extent=(0, seconds, 0, mel.shape[0]),
        )  # fmt: skip
        axis.set_ylabel(f"{name}\nmel band")
    axes[1].set_xlabel("seconds")
    axes[0].set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes, label="dB", shrink=0.8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
