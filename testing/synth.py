"""Synthetic music for demos, tests and benchmarks: notes, bass and drums, seeded.

Real catalogs cannot ship with the project, so the demo corpus and the tests generate songs
that exercise what real ones do: harmonic content across the spectrum, transients, stereo
differences, silence, and optional loud passages.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import numpy as np
import soundfile as sf

_SCALE = np.array([0, 2, 4, 5, 7, 9, 11, 12])


def synth_song(
    seconds: float, sample_rate: int, channels: int, seed: int, peak: float = 0.7
) -> np.ndarray:
    """A `[frames, channels]` float32 song: melody, bass and drums at 120 BPM."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * sample_rate)
    t = np.arange(frames) / sample_rate
    beat = 0.5
    note_index = (t // beat).astype(int)
    root = 57 + rng.integers(0, 12)
    melody_notes = root + _SCALE[rng.integers(0, len(_SCALE), size=note_index.max() + 1)]
    frequency = 440.0 * 2 ** ((melody_notes[note_index] - 69) / 12)
    phase = 2 * np.pi * np.cumsum(frequency) / sample_rate
    envelope = np.exp(-3.0 * (t % beat))
    melody = envelope * (np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase))
    bass = 0.5 * np.sin(2 * np.pi * 440.0 * 2 ** ((root - 12 - 69) / 12) * t)
    kick = np.exp(-25 * (t % beat)) * np.sin(2 * np.pi * 60 * (t % beat))
    hat_times = (t + beat / 2) % beat
    hat = 0.2 * np.exp(-60 * hat_times) * rng.standard_normal(frames)
    left = 0.5 * melody + 0.3 * bass + 0.6 * kick + 0.8 * hat
    right = 0.3 * melody + 0.5 * bass + 0.6 * kick + 0.3 * hat
    stereo = np.stack([left, right], axis=1)
    stereo *= peak / max(np.abs(stereo).max(), 1e-9)
    if channels == 1:
        audio = stereo.mean(axis=1, keepdims=True)
    elif channels == 2:
        audio = stereo
    else:
        extra = [0.5 * (left + right) * (0.9**k) for k in range(channels - 2)]
        audio = np.concatenate([stereo, np.stack(extra, axis=1) * peak / 2], axis=1)
    return audio.astype(np.float32)


def write_audio(path: str, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
    """Write with libsndfile by extension, or encode through ffmpeg for m4a/opus/wma."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    extension = path.rsplit(".", 1)[-1].lower()
    if extension in ("m4a", "aac", "opus", "wma", "webm"):
        codec = {"m4a": "aac", "aac": "aac", "opus": "libopus", "wma": "wmav2", "webm": "libopus"}
        with tempfile.NamedTemporaryFile(suffix=".wav") as source:
            sf.write(source.name, audio, sample_rate, subtype="FLOAT")
            subprocess.run(
                ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", source.name,
                 "-c:a", codec[extension], "-b:a", "160k", path],
                check=True,
            )  # fmt: skip
        return
    # libsndfile 1.2 segfaults on long Vorbis writes made in one call; blocks avoid it.
    with sf.SoundFile(path, "w", sample_rate, audio.shape[1], subtype=subtype) as sound:
        for start in range(0, len(audio), 1 << 16):
            sound.write(audio[start : start + (1 << 16)])
