"""The row the tokenizer actors return: a shard row with its audio swapped for codes.

Every `ShardSampleRow` comes back as one `TokenizedRow` (errors and shard-level rows pass
through with empty codes), so the driver sees every row and can tell when a shard is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.rows import ArrowRow
from pipeline.shard_reader import RowKind, ShardSampleRow

# Fields a TokenizedRow takes over from its ShardSampleRow unchanged.
_CARRIED = (
    "kind", "shard", "key", "error", "shard_rows", "song_id", "segment_index", "start_s",
    "duration_s", "lyrics_aligned", "lyrics", "lyrics_text", "source", "source_sha256",
)  # fmt: skip


@dataclass(frozen=True)
class Provenance:
    """What made the codes; every token row carries it (see schemas/tokens.py)."""

    tokenizer: str
    tokenizer_config: str  # The tokenizer's config as JSON.
    encoder_layer: int
    checkpoint_sha256: str
    token_rate: float  # Frames per second.
    code_version: str


@dataclass(frozen=True)
class TokenizedRow(ArrowRow, RowKind):
    """A shard row after the tokenizer: codes instead of audio, plus provenance.

    Attributes:
        kind, shard, key, error, shard_rows: As in `ShardSampleRow`.
        song_id ... source_sha256: The sample's metadata, as in `ShardSampleRow`.
        codes: `[n_codebooks, n_frames]` uint16, codebook-major, as bytes (b"" unless the
            row is a usable sample).
        n_codebooks, n_frames: The shape of `codes` (0 when empty).
        codebook_size: Codes per codebook (for the usage histogram).
        tokenizer ... code_version: `Provenance`.
    """

    kind: str
    shard: str
    key: str
    error: str
    shard_rows: int
    song_id: str
    segment_index: int
    start_s: float
    duration_s: float
    lyrics_aligned: bool
    lyrics: str
    lyrics_text: str
    source: str
    source_sha256: str
    codes: bytes
    n_codebooks: int
    n_frames: int
    codebook_size: int
    tokenizer: str
    tokenizer_config: str
    encoder_layer: int
    checkpoint_sha256: str
    token_rate: float
    code_version: str

    @classmethod
    def of(
        cls,
        sample: ShardSampleRow,
        provenance: Provenance,
        codebook_size: int,
        codes: np.ndarray | None = None,
    ) -> TokenizedRow:
        """`sample` with its audio replaced by `codes` (`[n_codebooks, n_frames]` uint16)."""
        carried: dict[str, Any] = {name: getattr(sample, name) for name in _CARRIED}
        shape = (0, 0) if codes is None else codes.shape
        return cls(
            **carried,
            codes=b"" if codes is None else codes.astype(np.uint16).tobytes(),
            n_codebooks=int(shape[0]),
            n_frames=int(shape[1]),
            codebook_size=int(codebook_size),
            **provenance.__dict__,
        )

    def decode_codes(self) -> np.ndarray:
        """The packed codes back to `[n_codebooks, n_frames]` uint16 (a read-only view)."""
        shape = (self.n_codebooks, self.n_frames)
        return np.frombuffer(self.codes, dtype=np.uint16).reshape(shape)
