"""The tokenizer actor: loads MuCodec once, turns batches of PCM rows into code rows.

Rows arrive as Arrow batches of `ShardSampleRow`s from the shard readers. Sample rows carry
16-bit PCM; rejected and shard-level rows pass through, so the driver sees every row. Each
comes back as a `TokenizedRow`: the audio dropped, the codes (packed uint16,
codebook-major), their shape, and the tokenizer's provenance added.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from mucodec.encoder.config import preset as config_preset
from mucodec.encoder.tokenizer import MuCodecTokenizer
from pipeline.shard_reader import ShardSampleRow
from pipeline.tokenize.rows import Provenance, TokenizedRow

TOKENIZER_NAME = "mucodec"
_PCM16_SCALE = 32768.0


def code_version() -> str:
    """This code's name and version, recorded with every token row."""
    return f"mucodec-pipeline {importlib.metadata.version('mucodec-pipeline')}"


@dataclass(frozen=True)
class TokenizerSpec:
    """Which tokenizer to run: a checkpoint, or a config preset with seeded random weights."""

    checkpoint: str | None = None
    preset: str | None = None
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when the actor has a GPU, else CPU.
    dtype: str = "float32"  # "bfloat16" runs the encoder under bf16 autocast on GPU.

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.preset is None):
            raise ValueError("give exactly one of a checkpoint or a config preset")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, not {self.dtype!r}")

    def identity(self) -> dict[str, Any]:
        """What decides the codes (not where they are computed)."""
        data = asdict(self)
        data.pop("device")
        return data

    def resolve_device(self) -> torch.device:
        """The device to run on: `device`, or CUDA when available for "auto"."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def load(self) -> MuCodecTokenizer:
        """Build the tokenizer (checkpoint or seeded preset) on its device, in eval mode."""
        device = self.resolve_device()
        if self.checkpoint is not None:
            tokenizer = MuCodecTokenizer.from_checkpoint(self.checkpoint, precision=self.dtype)
        else:
            tokenizer = MuCodecTokenizer.from_config(
                config_preset(self.preset), seed=self.seed, precision=self.dtype
            )
        return tokenizer.to(device).eval()


class TokenizeBatch:
    """Ray Data callable class: built once per actor (loads the model), called per batch.

    Args:
        spec: Which tokenizer to load.
        torch_threads: Threads torch may use in this actor (CPU share of the pool).
    """

    def __init__(self, spec: TokenizerSpec, torch_threads: int = 1) -> None:
        torch.set_num_threads(torch_threads)
        self.spec = spec
        self.device = spec.resolve_device()
        self.tokenizer = spec.load()
        self.provenance = provenance(self.tokenizer, spec)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Tokenize a batch of `ShardSampleRow`s into as many `TokenizedRow`s, in order."""
        rows = ShardSampleRow.from_table(batch)
        work = [i for i, row in enumerate(rows) if row.usable]
        codes = self._encode([rows[i] for i in work]) if work else []
        by_row = dict(zip(work, codes, strict=True))
        size = self.tokenizer.codebook_size
        outputs = [
            TokenizedRow.of(row, self.provenance, size, by_row.get(index))
            for index, row in enumerate(rows)
        ]
        return TokenizedRow.to_table(outputs)

    def _encode(self, rows: list[ShardSampleRow]) -> list[np.ndarray]:
        """Codes `[n_codebooks, n_frames]` uint16 for each usable sample row."""
        segments = [
            torch.from_numpy(np.frombuffer(r.pcm, dtype=np.int16).reshape(-1, 2).T.copy())
            .float()
            .div_(_PCM16_SCALE)
            for r in rows
        ]
        # The shard stores gain * source audio: the tokenizer undoes the gain and applies the
        # official song-level normalisation from the song's pre-gain peak.
        codes = self.tokenizer.encode_segments(
            segments,
            song_peaks=[float(r.song_peak) for r in rows],
            gains=[float(r.gain) for r in rows],
        )
        return [c.cpu().numpy().astype(np.uint16) for c in codes]


def provenance(tokenizer: MuCodecTokenizer, spec: TokenizerSpec) -> Provenance:
    """The provenance columns every token row carries."""
    return Provenance(
        tokenizer=TOKENIZER_NAME,
        tokenizer_config=tokenizer.config.to_json(),
        encoder_layer=tokenizer.config.encoder.output_layer,
        checkpoint_sha256=tokenizer.checkpoint_sha256 or f"random-weights-seed-{spec.seed}",
        token_rate=float(tokenizer.frame_rate),
        code_version=code_version(),
    )
