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
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import soundfile as sf
import torch

from audio_codecs.base import Codec
from mucodec.decoder.builders import build_decoder
from mucodec.decoder.checkpoint import load_decoder, load_official_decoder
from mucodec.decoder.config import WindowConfig, decoder_preset, with_codebooks
from mucodec.decoder.model import MuCodecDecoder
from mucodec.encoder.config import TokenizerConfig
from pipeline.errors import InvalidSetting
from pipeline.io import StorageOptions, atomic_write, filesystem, join
from pipeline.spotcheck.codecs import (
    TableCodec,
    as_the_codec_saw_it,
    load_decoding_codec,
)
from pipeline.spotcheck.metrics import SAMPLE_RATE, reconstruction_metrics
from pipeline.spotcheck.rows import DecodeRow, SampleMetrics
from pipeline.spotcheck.spectrogram import log_mel, mel_png
from pipeline.tokenize.encoded import encoded_segment
from schemas.metrics import METRICS_SCHEMA_VERSION

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
    window_codes: int | None = None  # None: the decoder's own (1024 codes, 40.96 s).

    def __post_init__(self) -> None:
        """Refuse specs that name no decoder, several, half of the official pair, or a window
        that cannot be cut."""
        sources = [self.checkpoint, self.official_mucodec, self.preset]
        if sum(s is not None for s in sources) != 1:
            raise ValueError("give exactly one of a decoder checkpoint, official files, a preset")
        if (self.official_mucodec is None) != (self.official_audioldm is None):
            raise ValueError("official decoding needs both mucodec.pt and audioldm_48k.pth")
        if self.window_codes is not None:
            try:
                WindowConfig.of_length(self.window_codes)
            except ValueError as error:
                raise InvalidSetting(str(error)) from None

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
        if self.window_codes is not None:
            token_rate = decoder.config.window.token_rate
            try:
                decoder.use_window(WindowConfig.of_length(self.window_codes, token_rate))
            except ValueError as error:  # Its overlap is no whole number of latent frames.
                raise InvalidSetting(f"--decoder-window {self.window_codes}: {error}") from None
        return decoder.eval()


def wav_bytes(audio: np.ndarray) -> bytes:
    """`[2, L]` float audio at 48 kHz as 16-bit PCM WAV bytes."""
    buffer = io.BytesIO()
    sf.write(buffer, audio.T, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def stored_audio(pcm: bytes) -> torch.Tensor:
    """A shard's 16-bit interleaved stereo PCM as float32 `[2, L]`."""
    stored = np.frombuffer(pcm, dtype=np.int16).reshape(-1, 2).T / _PCM16_SCALE
    return torch.from_numpy(stored.astype(np.float32))


class SpotcheckDecode:
    """Ray Data callable class: decodes rows of every codec, each model loaded once.

    Args:
        spec: MuCodec's decoder, and how to sample (steps, guidance, noise seed).
        codecs: Each codec's `TableCodec` as a dict (plain values, to travel to actors).
        output_url: The spot-check output; files go to `samples/<key>/<codec>/`.
        storage: How to reach object stores.
    """

    def __init__(
        self,
        spec: DecoderSpec,
        codecs: list[dict],
        output_url: str,
        storage: StorageOptions,
    ) -> None:
        self.spec = spec
        self.tables = {c["codec"]: TableCodec(**{**c, "files": tuple(c["files"])}) for c in codecs}
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.storage = storage
        self.output_url = output_url
        self._codecs: dict[str, Codec] = {}

    def _codec(self, name: str) -> Codec:
        if name not in self._codecs:
            self._codecs[name] = load_decoding_codec(self.tables[name], self.spec, self.device)
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
        table = self.tables[row.codec]
        reference = as_the_codec_saw_it(row, stored_audio(row.pcm))
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
        sampler = row.codec == "mucodec"
        record = SampleMetrics(
            key=row.key,
            codec=row.codec,
            bitrate_kbps=table.bitrate_kbps,
            song_id=row.song_id,
            segment_index=row.segment_index,
            start_s=row.start_s,
            duration_s=row.duration_s,
            n_frames=row.n_frames,
            **metrics,
            decoder_steps=self.spec.steps if sampler else 0,
            guidance_scale=self.spec.guidance if sampler else 0.0,
        )
        with atomic_write(fs, join(folder, "metrics.json")) as handle:
            data = {**record.to_dict(), "version": METRICS_SCHEMA_VERSION}
            handle.write(json.dumps(data, sort_keys=True).encode())
        return record
