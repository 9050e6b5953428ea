"""The spot-check actor: decode sampled token rows, measure them, write their listening files.

Each sample gets a folder `samples/<key>/` with `original.wav` (the segment as stored in
the shard), `reconstruction.wav` (decoded from its tokens), `spectrogram.png` (both, as log
mel spectrograms) and `metrics.json`, written last: its presence marks the sample done.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import soundfile as sf
import torch

from mucodec.decoder.builders import build_decoder
from mucodec.decoder.checkpoint import load_decoder, load_official_decoder
from mucodec.decoder.config import decoder_preset, with_codebooks
from mucodec.decoder.model import MuCodecDecoder
from mucodec.encoder.config import TokenizerConfig
from mucodec.encoder.frontend import song_peak_divisor
from pipeline.errors import InvalidSetting
from pipeline.io import StorageOptions, atomic_write, filesystem, join
from pipeline.spotcheck.metrics import SAMPLE_RATE, reconstruction_metrics
from pipeline.spotcheck.rows import DecodeRow, SampleMetrics
from pipeline.spotcheck.spectrogram import spectrogram_png

SAMPLES_DIR = "samples"
_PCM16_SCALE = 32768.0


@dataclass(frozen=True)
class DecoderSpec:
    """Which decoder: our converted checkpoint, the official files, or a random preset."""

    checkpoint: str | None = None
    official_mucodec: str | None = None
    official_audioldm: str | None = None
    preset: str | None = None
    seed: int = 0  # Weights of a random preset.
    steps: int = 50
    guidance: float = 1.5
    dtype: str = "float32"
    noise_seed: int = 0

    def __post_init__(self) -> None:
        """Refuse specs that name no decoder, several, or half of the official pair."""
        sources = [self.checkpoint, self.official_mucodec, self.preset]
        if sum(s is not None for s in sources) != 1:
            raise ValueError("give exactly one of a decoder checkpoint, official files, a preset")
        if (self.official_mucodec is None) != (self.official_audioldm is None):
            raise ValueError("official decoding needs both mucodec.pt and audioldm_48k.pth")

    def load(self, tokenizer_config: TokenizerConfig, device: torch.device) -> MuCodecDecoder:
        """Load the decoder; a random preset is shaped to the tokens' codebooks."""
        if self.checkpoint:
            decoder = load_decoder(self.checkpoint, device=device, precision=self.dtype)
        elif self.official_mucodec:
            decoder = load_official_decoder(
                self.official_mucodec, self.official_audioldm, device=device, precision=self.dtype
            )
        else:
            config = with_codebooks(
                decoder_preset(self.preset),
                tokenizer_config.quantizer.n_codebooks,
                tokenizer_config.quantizer.codebook_size,
            )
            decoder = build_decoder(config, seed=self.seed, device=device, precision=self.dtype)
        if (decoder.num_codebooks, decoder.codebook_size) < (
            tokenizer_config.quantizer.n_codebooks,
            tokenizer_config.quantizer.codebook_size,
        ):
            raise InvalidSetting(
                f"decoder has {decoder.num_codebooks} x {decoder.codebook_size} codes; the "
                f"tokens need {tokenizer_config.quantizer.n_codebooks} x "
                f"{tokenizer_config.quantizer.codebook_size}"
            )
        return decoder.eval()


def _wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


class SpotcheckDecode:
    """Ray Data callable class: loads the decoder once per actor (per tokenizer config).

    Args:
        spec: Which decoder, and how to sample (steps, guidance, noise seed).
        output_url: The spot-check output; each sample's files go to `samples/<key>/`.
        storage: How to reach object stores.
    """

    def __init__(self, spec: DecoderSpec, output_url: str, storage: StorageOptions) -> None:
        self.spec = spec
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.storage = storage
        self.output_url = output_url
        self._decoders: dict[str, MuCodecDecoder] = {}

    def _decoder(self, tokenizer_config: str) -> MuCodecDecoder:
        if tokenizer_config not in self._decoders:
            config = TokenizerConfig.from_json(tokenizer_config)
            self._decoders[tokenizer_config] = self.spec.load(config, self.device)
        return self._decoders[tokenizer_config]

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Decode, measure and write a batch of `DecodeRow`s; their `SampleMetrics` back."""
        rows = DecodeRow.from_table(batch)
        outputs: list[SampleMetrics] = []
        # Items of one batch must share a length to be decoded together.
        for n_frames in sorted({r.n_frames for r in rows}):
            group = [r for r in rows if r.n_frames == n_frames]
            outputs.extend(self._decode_group(group))
        return SampleMetrics.to_table(outputs)

    def _decode_group(self, rows: list[DecodeRow]) -> list[SampleMetrics]:
        decoder = self._decoder(rows[0].tokenizer_config)
        codes = torch.stack([torch.tensor(r.codes, dtype=torch.long) for r in rows])
        sampling = decoder.with_sampling(
            num_steps=self.spec.steps, guidance_scale=self.spec.guidance
        )
        seeds = [self.spec.noise_seed] * len(rows)
        with torch.inference_mode():
            audio = decoder.decode(codes, seeds=seeds, sampling=sampling).float().cpu()
        return [self._finish(row, audio[i]) for i, row in enumerate(rows)]

    def _finish(self, row: DecodeRow, reconstruction: torch.Tensor) -> SampleMetrics:
        stored = np.frombuffer(row.pcm, dtype=np.int16).reshape(-1, 2).T / _PCM16_SCALE
        stored = torch.from_numpy(stored.astype(np.float32))
        # The tokens describe the segment as the tokenizer saw it: gain undone, then the
        # official song-level normalisation; metrics compare against that.
        divisor = float(song_peak_divisor(row.song_peak))
        reference = stored / float(row.gain) / divisor
        metrics = reconstruction_metrics(reference, reconstruction)
        fs, root = filesystem(self.output_url, self.storage)
        folder = join(root, SAMPLES_DIR, row.key)
        files = {
            "original.wav": _wav_bytes(stored.numpy()),
            "reconstruction.wav": _wav_bytes(reconstruction.clamp(-1, 1).numpy()),
            "spectrogram.png": spectrogram_png(reference, reconstruction, row.key),
        }
        for name, data in files.items():
            with atomic_write(fs, join(folder, name)) as handle:
                handle.write(data)
        record = SampleMetrics(
            key=row.key,
            song_id=row.song_id,
            segment_index=row.segment_index,
            start_s=row.start_s,
            duration_s=row.duration_s,
            n_frames=row.n_frames,
            **metrics,
            decoder_steps=self.spec.steps,
            guidance_scale=self.spec.guidance,
        )
        with atomic_write(fs, join(folder, "metrics.json")) as handle:
            handle.write(json.dumps(record.to_dict(), sort_keys=True).encode())
        return record
