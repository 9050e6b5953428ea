"""The tokenizer actor: loads MuCodec once, turns batches of PCM rows into code rows.

Rows arrive as Arrow batches from the shard readers. Sample rows carry 16-bit PCM; error
rows and end-of-shard rows pass through untouched, so the driver sees every row. Output rows
drop the audio and gain the codes (packed uint16, codebook-major), their shape, and the
tokenizer's provenance.
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

TOKENIZER_NAME = "mucodec"
_PCM16_SCALE = 32768.0


def code_version() -> str:
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
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def load(self) -> MuCodecTokenizer:
        device = self.resolve_device()
        if self.checkpoint is not None:
            tokenizer = MuCodecTokenizer.from_checkpoint(self.checkpoint, precision=self.dtype)
        else:
            tokenizer = MuCodecTokenizer.from_config(
                config_preset(self.preset), seed=self.seed, precision=self.dtype
            )
        return tokenizer.to(device).eval()


class TokenizeBatch:
    """Ray Data callable class: built once per actor, called per batch."""

    def __init__(self, spec: TokenizerSpec, torch_threads: int = 1) -> None:
        torch.set_num_threads(torch_threads)
        self.spec = spec
        self.device = spec.resolve_device()
        self.tokenizer = spec.load()
        self.provenance = provenance(self.tokenizer, spec)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        work = [i for i, row in enumerate(rows) if not row["error"] and not row["end_of_shard"]]
        codes = self._encode([rows[i] for i in work]) if work else []
        outputs: list[dict[str, Any]] = []
        by_row = dict(zip(work, codes, strict=True))
        for index, row in enumerate(rows):
            row.pop("pcm")
            row.update(self.provenance)
            row["codebook_size"] = self.tokenizer.codebook_size
            if index in by_row:
                packed = by_row[index]
                row.update(
                    codes=packed.tobytes(), n_codebooks=packed.shape[0], n_frames=packed.shape[1]
                )
            else:
                row.update(codes=b"", n_codebooks=0, n_frames=0)
            outputs.append(row)
        return pa.Table.from_pylist(outputs)

    def _encode(self, rows: list[dict[str, Any]]) -> list[np.ndarray]:
        """Codes `[n_codebooks, n_frames]` uint16 for each sample row."""
        segments = [
            torch.from_numpy(np.frombuffer(r["pcm"], dtype=np.int16).reshape(-1, 2).T.copy())
            .float()
            .div_(_PCM16_SCALE)
            for r in rows
        ]
        # The shard stores gain * source audio: the tokenizer undoes the gain and applies the
        # official song-level normalisation from the song's pre-gain peak.
        codes = self.tokenizer.encode_segments(
            segments,
            song_peaks=[float(r["song_peak"]) for r in rows],
            gains=[float(r["gain"]) for r in rows],
        )
        return [c.cpu().numpy().astype(np.uint16) for c in codes]


def provenance(tokenizer: MuCodecTokenizer, spec: TokenizerSpec) -> dict[str, Any]:
    """The provenance columns every token row carries."""
    return {
        "tokenizer": TOKENIZER_NAME,
        "tokenizer_config": tokenizer.config.to_json(),
        "encoder_layer": tokenizer.config.encoder.output_layer,
        "checkpoint_sha256": tokenizer.checkpoint_sha256 or f"random-weights-seed-{spec.seed}",
        "token_rate": float(tokenizer.frame_rate),
        "code_version": code_version(),
    }
