"""The one place where encoder-side configs become modules.

Composite modules receive built parts; everything here is plain construction with the
configs' values, so tests can assemble tiny or partial models from the same functions.
"""

from __future__ import annotations

import itertools

from torch import nn

from mucodec.config import QuantizerConfig
from mucodec.encoder.config import FrontendConfig, MuEncoderConfig
from mucodec.encoder.conformer import (
    ConformerBlock,
    ConvolutionModule,
    HalfStepFeedForward,
    RotaryEmbedding,
    RotarySelfAttention,
)
from mucodec.encoder.frontend import Frontend
from mucodec.encoder.muencoder import MuEncoder
from mucodec.encoder.subsampling import Conv2dSubsampling, ResidualConvBlock
from mucodec.quantizer import ResidualVectorQuantizer


def build_frontend(config: FrontendConfig) -> Frontend:
    """Resampler, mel spectrogram and normalisation.

    Args:
        config: The front end's config.

    Returns:
        The front end (its buffers computed, no learned weights).
    """
    return Frontend(config)


def build_subsampling(config: MuEncoderConfig) -> Conv2dSubsampling:
    """n residual conv blocks (1 -> conv_dim -> ... channels) and the flattening projection.

    Args:
        config: The encoder config (conv width, block count, mels, model width).

    Returns:
        The subsampling module with fresh weights.
    """
    channels = [1] + [config.conv_dim] * config.n_subsampling_blocks
    blocks = nn.ModuleList(
        ResidualConvBlock(c_in, c_out, eps=config.layer_norm_eps)
        for c_in, c_out in itertools.pairwise(channels)
    )
    mels_out = config.n_mels // config.subsampling_factor
    return Conv2dSubsampling(blocks, nn.Linear(config.conv_dim * mels_out, config.dim))


def build_conformer_block(config: MuEncoderConfig) -> ConformerBlock:
    """One Conformer block at the config's width.

    Args:
        config: The encoder config.

    Returns:
        The block with fresh weights.
    """
    eps = config.layer_norm_eps
    return ConformerBlock(
        ffn1=HalfStepFeedForward(config.dim, config.ffn_dim, eps),
        attention=RotarySelfAttention(config.dim, config.num_heads, eps),
        conv=ConvolutionModule(config.dim, config.depthwise_kernel_size, eps),
        ffn2=HalfStepFeedForward(config.dim, config.ffn_dim, eps),
        final_norm=nn.LayerNorm(config.dim, eps=eps),
    )


def build_encoder(config: MuEncoderConfig) -> MuEncoder:
    """The blocks up to `output_layer` only (plus the final LayerNorm if it is the last).

    Args:
        config: The encoder config.

    Returns:
        The MuEncoder with fresh weights.
    """
    blocks = nn.ModuleList(build_conformer_block(config) for _ in range(config.n_blocks_run))
    final_norm = (
        nn.LayerNorm(config.dim, eps=config.layer_norm_eps)
        if config.output_layer == config.depth and config.depth > 0
        else None
    )
    return MuEncoder(
        subsampling=build_subsampling(config),
        rotary=RotaryEmbedding(config.head_dim, config.rotary_base),
        blocks=blocks,
        final_norm=final_norm,
    )


def build_quantizer(config: QuantizerConfig) -> ResidualVectorQuantizer:
    """The residual vector quantiser.

    Args:
        config: The RVQ layout.

    Returns:
        The quantiser with fresh weights.
    """
    return ResidualVectorQuantizer(config)
