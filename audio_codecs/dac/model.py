"""Building a `DacModel` from our config, and the official entry points on top of it.

`DacModel` has the official architecture (plain conv weights, the official weight norm
folded in at load). What it lacks, or does differently, lives here: `preprocess` (right
zero-pad to a hop multiple), `encode` with the official nearest-code rule (`quantize`),
`decode` returning the official `[B, 1, T]`, and switching the conv padding off for the
windowed inference of `compress` (`conv_padding`).

Legend: B batch, T samples, F frames, K codebooks, D latent channels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DacModel

from audio_codecs.dac.config import DacCodecConfig
from audio_codecs.dac.quantize import Quantized, from_codes, quantize
from core.precision import float32_region


def build_model(
    config: DacCodecConfig, seed: int | None = 0, device: torch.device | str = "cpu"
) -> DacModel:
    """A `DacModel` of `config` in eval mode.

    Args:
        config: The model's shape.
        seed: Seed of the random weights (`draw_weights`); None on the meta device, where
            there are no values (a meta model gets its weights from `load_strict`).
        device: Where the parameters live; "meta" builds shapes only.

    Returns:
        The model, in eval mode, without gradients.
    """
    device = torch.device(device)
    with torch.device("meta"):
        model = DacModel(config.to_hf())
    if device.type != "meta":
        model = model.to_empty(device=torch.device("cpu"))
        draw_weights(model, 0 if seed is None else seed)
        model = model.to(device)
    model.requires_grad_(False)
    return model.eval()


def draw_weights(model: DacModel, seed: int) -> None:
    """Fills `model` with well-scaled random weights from `seed`, in state-dict order.

    transformers' own init (std 0.02 everywhere) shrinks the signal layer by layer into
    denormal floats, which makes a CPU run 20x slower and the codes degenerate. Instead:
    conv weights N(0, 1/fan_in) (the closing 1x1 conv of each residual unit x 0.3, so the
    residual stack does not blow up), biases 0.05 N(0, 1), Snake alphas exp(0.3 N(0, 1)),
    codebooks N(0, 1). Deterministic for a seed, independent of the global generator.
    """
    generator = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            owner, _, leaf = name.rpartition(".")
            module = modules[owner]
            values = torch.randn(tensor.shape, generator=generator)
            if leaf == "weight" and isinstance(module, nn.Conv1d | nn.ConvTranspose1d):
                fan_in = module.in_channels * module.kernel_size[0] / module.stride[0]
                scale = 0.3 if owner.endswith(".conv2") and ".res_unit" in owner else 1.0
                values = values * (scale / math.sqrt(fan_in))
            elif leaf == "bias":
                values = 0.05 * values
            elif leaf == "alpha":
                values = torch.exp(0.3 * values)
            tensor.copy_(values)


def preprocess(audio: Tensor, hop: int) -> Tensor:
    """The official `DAC.preprocess`: right zero-pad `[..., T]` to a multiple of `hop`."""
    length = audio.shape[-1]
    return F.pad(audio, (0, math.ceil(length / hop) * hop - length))


def encode(model: DacModel, audio: Tensor, n_quantizers: int | None = None) -> Quantized:
    """The official `DAC.encode`: audio `[B, 1, T]` (a hop multiple) -> z, codes, latents.

    Args:
        model: The model, eval mode.
        audio: Preprocessed mono audio at the model rate `[B, 1, T]`.
        n_quantizers: Codebooks to use; None: all.

    Returns:
        `Quantized` with codes `[B, K, T // hop]`.
    """
    features = model.encoder(audio)  # [B, D, F]
    with float32_region(features.device):  # Code margins can be far below bf16 resolution.
        return quantize(model.quantizer, features.float(), n_quantizers)


def decode(model: DacModel, z: Tensor) -> Tensor:
    """The official `DAC.decode`: z `[B, D, F]` -> audio `[B, 1, F*hop]` (16/24 kHz: 8 fewer)."""
    return model.decoder(z)  # [B, 1, T]


def decode_codes(model: DacModel, codes: Tensor) -> Tensor:
    """`decode(quantizer.from_codes(codes)[0])`: codes `[B, K, F]` -> audio `[B, 1, T]`."""
    z, _ = from_codes(model.quantizer, codes)
    return decode(model, z)


def _convs(model: nn.Module) -> list[nn.Conv1d | nn.ConvTranspose1d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv1d | nn.ConvTranspose1d)]


@contextlib.contextmanager
def conv_padding(model: DacModel, enabled: bool) -> Iterator[None]:
    """Sets the padding of every conv on or off for the block, as the official `padding` does.

    With padding off each conv shrinks its input, and each residual unit centre-crops its
    skip path to match (transformers' `DacResidualUnit` does this, as the official one).

    Args:
        model: The model.
        enabled: True: the constructor's padding; False: zero padding everywhere.

    Yields:
        Nothing; the padding is restored afterwards.
    """
    convs = _convs(model)
    original = [conv.padding for conv in convs]
    try:
        if not enabled:
            for conv in convs:
                conv.padding = (0,)
        yield
    finally:
        for conv, padding in zip(convs, original, strict=True):
            conv.padding = padding
