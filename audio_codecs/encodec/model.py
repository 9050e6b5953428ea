"""Builds `transformers.EncodecModel` from our config, with seeded random weights for presets.

The one builder of EnCodec modules. A preset's weights are random but
deterministic in the seed, and its codebooks are usable: transformers initialises every
codebook to zeros (all codes 0), so `init_codebooks_` draws each stage's code vectors
around residual vectors of the encoder's own output on a seeded noise signal, the way the
official k-means initialisation starts.
"""

from __future__ import annotations

import torch
from transformers import EncodecModel

from audio_codecs.encodec.config import EncodecCodecConfig, to_hf_config

__all__ = ["build_model", "init_codebooks_", "random_model"]

_CALIBRATION_SECONDS = 1.0
_CALIBRATION_LEVEL = 0.1  # RMS of the calibration noise (full scale 1.0).
_CODE_SPREAD = 0.5  # Code vectors' spread around the picked residuals, in units of their RMS.


def build_model(config: EncodecCodecConfig, device: torch.device | str = "cpu") -> EncodecModel:
    """An `EncodecModel` of `config`'s shape on `device` (weights as transformers inits them).

    On the meta device nothing is allocated: enough to check checkpoint keys and shapes, or
    to be filled by `core.key_map.load_strict` (which assigns the tensors).

    Args:
        config: The model's shape.
        device: Where to build it.

    Returns:
        The model, in eval mode.
    """
    with torch.device(device):
        model = EncodecModel(to_hf_config(config))
    return model.eval()


def random_model(config: EncodecCodecConfig, seed: int) -> EncodecModel:
    """A CPU model with random weights drawn from `seed` and usable codebooks.

    The torch RNG state of the caller is left as it was.

    Args:
        config: The model's shape.
        seed: Seed of every random weight; the same seed gives the same model.

    Returns:
        The model, in eval mode, on the CPU.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config)
    init_codebooks_(model, config, torch.Generator().manual_seed(seed))
    return model


@torch.no_grad()
def init_codebooks_(
    model: EncodecModel, config: EncodecCodecConfig, generator: torch.Generator
) -> None:
    """Draws every codebook around residual vectors of the model's own embeddings.

    Stage k: `embed = v + 0.5 * r_k * N(0, 1)` with v `bins` residual vectors of stage k
    picked at random and r_k the RMS of the residuals about their mean (their spread over
    time, which can be far below their size in an untrained model); `cluster_size` 1,
    `embed_avg = embed`, `inited` 1. Stage k+1's residual subtracts stage k's codes.

    Args:
        model: A freshly built model (its encoder's weights already drawn).
        config: Its shape.
        generator: Source of the calibration noise and of the draws.
    """
    n = int(_CALIBRATION_SECONDS * config.sample_rate)
    noise = torch.randn(1, config.channels, n, generator=generator) * _CALIBRATION_LEVEL
    if config.normalize:
        noise = noise / (noise.mean(1, keepdim=True).pow(2).mean(-1, keepdim=True).sqrt() + 1e-8)
    residual = model.encoder(noise)[0].T  # [T, D]
    for layer in model.quantizer.layers:
        book = layer.codebook
        picks = torch.randint(0, residual.shape[0], (config.bins,), generator=generator)
        chosen = residual[picks]  # [bins, D]
        spread = (residual - residual.mean(0)).pow(2).mean().sqrt() * _CODE_SPREAD
        embed = chosen + spread * torch.randn(chosen.shape, generator=generator)
        book.embed.copy_(embed)
        book.embed_avg.copy_(embed)
        book.cluster_size.fill_(1.0)
        book.inited.fill_(1.0)
        indices = book.quantize(residual)  # [T]
        residual = residual - embed[indices]
