"""Front end: 48 kHz stereo waveform -> normalised log-mel features for MuQ.

This is the official `fetch_codes_batch` front end followed by MuQ's preprocessing
(encoder spec, sections 3 to 5):

1. per segment and channel peak normalisation (threshold 0.9, strict, a division);
2. mono = (L + R) / 2;
3. 48 kHz -> 24 kHz with torchaudio's sinc resampler at its defaults;
4. trim to a multiple of 960 samples (one token) at 24 kHz;
5. torchaudio mel spectrogram (STFT 2048 / hop 240 / Hann, power, 128 HTK bands), dB with
   a -100 dB floor, the last frame dropped;
6. (dB - mean) / std with MuQ's hard-coded statistics.

The torchaudio transforms are used as they are, so parity with the reference holds by
construction. The one addition is variable-length batches: each item is reflect-padded at
*its own* end before the STFT (the reference's `center=True` does the same for a single
item), so a short segment inside a padded batch gives the features it gives alone.

The whole-song normalisation of the official script (threshold 0.8, jointly over both
channels) is `song_peak_divisor` / `normalise_song`; it happens before windowing or
segmenting, so it is not part of `Frontend.forward`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from core.precision import float32_region
from mucodec.encoder.config import FrontendConfig


def peak_divisor(peak: Tensor, threshold: float) -> Tensor:
    """Divisor of the reference's `preprocess_audio`: peak / threshold above it, else 1.

    Args:
        peak: Peaks (any shape), float32.
        threshold: Strict threshold; a peak exactly at it is left alone.

    Returns:
        Divisors of the same shape, computed in float32 as the reference does.
    """
    return torch.where(peak > threshold, peak / threshold, torch.ones_like(peak))


def song_peak_divisor(song_peak: float | Tensor, threshold: float = 0.8) -> Tensor:
    """The official script's whole-song divisor (`generate.py: preprocess_audio`).

    A segment cut from a song must be divided by this to get the samples sound2code sees.

    Args:
        song_peak: Peak of the whole song over both channels, or a tensor of them [B].
        threshold: The script's threshold (0.8).

    Returns:
        Float32 tensor of divisors (0-d for a float input).
    """
    return peak_divisor(torch.as_tensor(song_peak, dtype=torch.float32), threshold)


def normalise_song(audio: Tensor, threshold: float = 0.8) -> Tensor:
    """Divides a whole song by (peak / threshold) when its joint peak exceeds `threshold`.

    Args:
        audio: [C, T] float song.
        threshold: Peak above which the song is scaled down (0.8, the official script's).

    Returns:
        [C, T], the same tensor's values divided by the song's divisor (1 when quiet).
    """
    return audio / song_peak_divisor(audio.abs().max(), threshold)


@dataclass(frozen=True)
class FrontendOutput:
    """What the front end hands to the encoder.

    Attributes:
        features: [B, n_mels, F] normalised log-mel, zero beyond each item's length.
        frame_lengths: [B] valid mel frames per item (F_i = 4 x tokens).
        wav24k: [B, S] mono audio at the encoder rate before the trim (ceil(L_i / 2)).
        mel_db: [B, n_mels, F + 1] dB mel before the last frame is dropped.
    """

    features: Tensor
    frame_lengths: Tensor
    wav24k: Tensor
    mel_db: Tensor


class Frontend(nn.Module):
    """[B, 2, L] stereo at 48 kHz (+ lengths) -> `FrontendOutput`."""

    def __init__(self, config: FrontendConfig) -> None:
        """Creates the layers with fresh weights.

        Args:
            config: Sample rates, mel and normalisation settings.
        """
        super().__init__()
        self.config = config
        self.resampler = torchaudio.transforms.Resample(
            config.input_sample_rate, config.encoder_sample_rate
        )
        # centre=False: the reflect padding of centre=True is done per item in `log_mel`.
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.encoder_sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            center=False,
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB()

    def token_lengths(self, lengths: Tensor) -> Tensor:
        """Tokens produced for inputs of `lengths` samples at the input rate.

        ceil(L / 2) samples at 24 kHz, trimmed down to whole tokens of 960 samples.

        Args:
            lengths: [B] int samples at 48 kHz.

        Returns:
            [B] int tokens.
        """
        ratio = self.config.input_sample_rate // self.config.encoder_sample_rate
        encoder_lengths = (lengths + ratio - 1) // ratio
        return encoder_lengths // self.config.samples_per_token

    def downmix(self, audio: Tensor) -> Tensor:
        """Per-channel peak normalisation (0.9), then mono.

        Args:
            audio: [B, 2, L] stereo.

        Returns:
            [B, L] mono.
        """
        peak = audio.abs().amax(dim=-1)  # [B, 2]
        audio = audio / peak_divisor(peak, self.config.segment_peak_threshold)[..., None]
        return (audio[:, 0] + audio[:, 1]) / 2.0

    def log_mel(self, wav24k: Tensor, samples: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised log-mel of each item's first `samples[i]` samples.

        Args:
            wav24k: [B, S] mono at the encoder rate.
            samples: [B] trimmed lengths (multiples of 960, at least 1920).

        Returns:
            (features [B, n_mels, F], mel_db [B, n_mels, F + 1]) with F = max(samples) / 240.
        """
        pad = self.config.n_fft // 2
        longest = int(samples.max())
        padded = wav24k.new_zeros(wav24k.shape[0], longest + 2 * pad)
        for i, n in enumerate(samples.tolist()):
            # What torch.stft(center=True) does, but at this item's own end.
            padded[i, : n + 2 * pad] = F.pad(wav24k[i : i + 1, :n], (pad, pad), mode="reflect")[0]
        mel_db = self.to_db(self.mel(padded))  # [B, n_mels, F + 1]
        features = (mel_db[..., :-1] - self.config.mel_mean) / self.config.mel_std
        frames = samples // self.config.hop_length  # [B]
        valid = torch.arange(features.shape[-1], device=features.device) < frames[:, None]
        return features * valid[:, None, :], mel_db

    def forward(self, audio: Tensor, lengths: Tensor | None = None) -> FrontendOutput:
        """Runs the front end on a batch of stereo segments.

        Args:
            audio: [B, 2, L] float at 48 kHz; items shorter than L are zero padded.
            lengths: [B] valid samples per item; None means all L.

        Returns:
            `FrontendOutput`; item i has `4 * token_lengths(lengths)[i]` valid mel frames.

        Raises:
            ValueError: if the input is not stereo or an item is too short for two tokens.
        """
        if audio.dim() != 3 or audio.shape[1] != 2:
            raise ValueError(f"audio must be [B, 2, L] stereo, got {tuple(audio.shape)}")
        batch, _, length = audio.shape
        if lengths is None:
            lengths = torch.full((batch,), length, dtype=torch.long)
        lengths = lengths.to(device=audio.device, dtype=torch.long)
        tokens = self.token_lengths(lengths)
        if int(tokens.min()) < 2:
            ratio = self.config.input_sample_rate // self.config.encoder_sample_rate
            minimum = (2 * self.config.samples_per_token - 1) * ratio + 1
            raise ValueError(
                f"every segment needs 2 tokens of audio, at least {minimum} samples at "
                f"{self.config.input_sample_rate} Hz; got lengths {lengths.tolist()}"
            )
        with float32_region(audio.device):
            return self._run(audio.float(), lengths, tokens)

    def _run(self, audio: Tensor, lengths: Tensor, tokens: Tensor) -> FrontendOutput:
        """`forward` after validation, in float32."""
        length = audio.shape[-1]
        if int(lengths.min()) < length:
            # Zero what lies past each item's end, so padding content cannot leak in.
            valid = torch.arange(length, device=audio.device) < lengths[:, None]
            audio = audio * valid[:, None, :]
        mono = self.downmix(audio)  # [B, L]
        wav24k = self.resampler(mono)  # [B, ceil(L / 2)]
        samples = tokens * self.config.samples_per_token  # [B]
        features, mel_db = self.log_mel(wav24k, samples)
        return FrontendOutput(
            features=features,
            frame_lengths=samples // self.config.hop_length,
            wav24k=wav24k,
            mel_db=mel_db,
        )
