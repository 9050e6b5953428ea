"""What both MuCodec wings share in their configs: the format version and the quantiser.

`QuantizerConfig` describes the residual vector quantiser that the encoder quantises with
and the decoder looks codes up in.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import JsonConfig

CONFIG_FORMAT_VERSION = 1


@dataclass(frozen=True)
class QuantizerConfig(JsonConfig):
    """Residual vector quantiser with factorised, L2-normalised codes (DAC style).

    Attributes:
        input_dim: Channels of the encoder features (D).
        n_codebooks: Residual stages (N).
        codebook_size: Entries per codebook (K).
        codebook_dim: Width of the factorised code space each stage projects to.
    """

    input_dim: int = 1024
    n_codebooks: int = 1
    codebook_size: int = 16384
    codebook_dim: int = 32
