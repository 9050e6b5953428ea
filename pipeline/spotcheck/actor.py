"""The spot-check actor: decode sampled token rows of every codec, measure, write the files.

Each sample gets a folder `samples/<key>/` with `original.wav` (the segment as stored in
the shard) and `original.png` (its log-mel spectrogram), written once by the reader, and per
codec `samples/<key>/<codec>/` with `reconstruction.wav`, `spectrogram.png` (the
reconstruction's log mel, on the colour scale of the original as that codec saw it) and
`metrics.json`, written last: its presence marks the sample done for that codec.

One actor decodes every codec (each model loaded once, on first use), so the pool's size
is the only knob and the files do not depend on which actor took which row.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import soundfile as sf
import torch

from audio_codecs.base import PCM16_SCALE, Codec
from pipeline.io import StorageOptions, atomic_write, filesystem, join
from pipeline.spotcheck.codecs import (
    TableCodec,
)
from pipeline.spotcheck.metrics import SAMPLE_RATE, reconstruction_metrics
from pipeline.spotcheck.rows import DecodeRow, SampleMetrics
from pipeline.spotcheck.spectrogram import log_mel, mel_png
from pipeline.tokenize.encoded import encoded_segment
from schemas.metrics import METRICS_SCHEMA_VERSION

SAMPLES_DIR = "samples"


def wav_bytes(audio: np.ndarray) -> bytes:
    """`[2, L]` float audio at 48 kHz as 16-bit PCM WAV bytes."""
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def stored_audio(pcm: bytes) -> torch.Tensor:
    """A shard's 16-bit interleaved stereo PCM as float32 `[2, L]`."""
    stored = np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2).T / PCM16_SCALE
    return torch.from_numpy(stored.astype(np.float32))


class SpotcheckDecode:
    """Ray Data callable class: decodes rows of every codec, each model loaded once.

    Args:
        codecs: Each codec's `TableCodec` as a dict (`to_dict`: plain values, to travel to
            actors), with its decoder settings.
        output_url: The spot-check output; files go to `samples/<key>/<codec>/`.
        storage: How to reach object stores.
    """

    def __init__(self, codecs: list[dict], output_url: str, storage: StorageOptions) -> None:
        tables = [TableCodec.from_dict(c) for c in codecs]
        self.tables = {table.codec: table for table in tables}
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.storage = storage
        self.output_url = output_url
        self._codecs: dict[str, Codec] = {}

    def _codec(self, name: str) -> Codec:
        if name not in self._codecs:
            self._codecs[name] = self.tables[name].decoding_codec(self.device)
        return self._codecs[name]

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Decode, measure and write a batch of `DecodeRow`s; their `SampleMetrics` back."""
        rows = sorted(DecodeRow.from_table(batch), key=lambda r: (r.codec, r.key))
        outputs: list[SampleMetrics] = []
        for name in sorted({r.codec for r in rows}):
            group = [r for r in rows if r.codec == name]
            with torch.inference_mode():
                audio = self._codec(name).decode([encoded_segment(r.to_dict()) for r in group])
            outputs.extend(self._finish(r, a) for r, a in zip(group, audio, strict=True))
        return SampleMetrics.to_table(outputs)

    def _finish(self, row: DecodeRow, reconstruction: torch.Tensor) -> SampleMetrics:
        table, codec = self.tables[row.codec], self._codec(row.codec)
        # The segment as the codec encoded it: the shard's gain undone, then the codec's own
        # level handling (MuCodec's song-level normalisation).
        reference = codec.as_seen(stored_audio(row.pcm) / float(row.gain), float(row.song_peak))
        metrics = reconstruction_metrics(reference, reconstruction)
        fs, root = filesystem(self.output_url, self.storage)
        folder = join(root, SAMPLES_DIR, row.key, row.codec)
        high = float(log_mel(reference).max())
        files = {
            "reconstruction.wav": wav_bytes(reconstruction.clamp(-1, 1).numpy()),
            "spectrogram.png": mel_png(reconstruction, f"{row.key}: {row.codec}", high),
        }
        for name, data in files.items():
            with atomic_write(fs, join(folder, name)) as handle:
                handle.write(data)
        steps, guidance = codec.sampling
        record = SampleMetrics(
            key=row.key,
            codec=row.codec,
            bitrate_kbps=table.recorded.bitrate_kbps,
            song_id=row.song_id,
            segment_index=row.segment_index,
            start_s=row.start_s,
            duration_s=row.duration_s,
            n_frames=row.n_frames,
            **metrics,
            decoder_steps=steps,
            guidance_scale=guidance,
        )
        with atomic_write(fs, join(folder, "metrics.json")) as handle:
            data = {**record.to_dict(), "version": METRICS_SCHEMA_VERSION}
            handle.write(json.dumps(data, sort_keys=True).encode())
        return record
