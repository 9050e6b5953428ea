"""The one place where decoder configs become modules.

`build_decoder(config)` wires the parts by injection into `MuCodecDecoder`; tests, benchmarks
and the loaders of `mucodec.decoder.checkpoint` go through it (the model module imports
neither). Building on the meta device (`device="meta"`) costs no memory, which the strict
key/shape checks of the full-size models use.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from core.precision import Precision
from mucodec.decoder.config import DecoderConfig, FlowConfig
from mucodec.decoder.dit import DiT
from mucodec.decoder.flow import CodeConditioner, CodeToLatent
from mucodec.decoder.model import MuCodecDecoder
from mucodec.decoder.normalizer import FeatureNormalizer
from mucodec.decoder.vae import MelVAEDecoder
from mucodec.decoder.vocoder import HiFiGAN
from mucodec.quantizer import ResidualVectorQuantizer

__all__ = ["build_code_to_latent", "build_decoder"]


def build_code_to_latent(config: FlowConfig) -> CodeToLatent:
    """Conditioner + DiT + normaliser for `config`.

    Args:
        config: The flow-matching config.

    Returns:
        The code -> latent model with fresh (random) weights.
    """
    cond = config.conditioner
    conditioner = CodeConditioner(
        rvq=ResidualVectorQuantizer(cond.quantizer),
        proj=nn.Linear(cond.quantizer.input_dim, cond.cond_dim),
        channels=config.latent_channels,
        bins=config.latent_freq,
        codes_per_frame=cond.codes_per_frame,
    )
    return CodeToLatent(
        conditioner=conditioner,
        estimator=DiT(config.estimator),
        normalizer=FeatureNormalizer(
            config.latent_channels, config.latent_freq, config.normalizer_samples
        ),
        sigma_min=config.sigma_min,
    )


def build_decoder(
    config: DecoderConfig,
    *,
    device: torch.device | str | None = None,
    seed: int | None = None,
    precision: Precision = "float32",
) -> MuCodecDecoder:
    """Builds the decoder with fresh (random) weights.

    Args:
        config: The decoder config.
        device: Where to allocate; "meta" for a shape-only model.
        seed: Seed of a private generator state for the initialisation (the global RNG is
            restored afterwards); None draws from the global RNG as is.
        precision: Autocast dtype of the estimator and the VAE (`MuCodecDecoder.precision`).

    Returns:
        The decoder in eval mode; its state dict is our checkpoint layout
        (`flow.*`, `vae.*`, `vocoder.*`).
    """
    fork = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    place = torch.device(device) if device is not None else contextlib.nullcontext()
    with fork, place:
        if seed is not None:
            torch.manual_seed(seed)
        decoder = MuCodecDecoder(
            config=config,
            flow=build_code_to_latent(config.flow),
            vae=MelVAEDecoder(config.vae),
            vocoder=HiFiGAN(config.vocoder),
            precision=precision,
        )
    return decoder.eval()
