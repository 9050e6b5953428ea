"""DAC shapes: the official constructor kwargs as a frozen config, presets, derived lengths.

The fields are exactly the keyword arguments of the official `dac.model.dac.DAC` (less
`quantizer_dropout`, which has no effect in eval). transformers' `DacConfig` cannot express
every official model: it has no `latent_dim` (it is always `encoder_dim * 2**len(rates)`),
its decoder rates are the encoder rates reversed, and `codebook_dim` is one int. A config
outside that is refused here, with the reason, so it never reaches a half-built model. The
44 kHz 16 kbps release (`latent_dim` 128) is such a model and has no preset.

The window arithmetic of the official `CodecMixin` (`get_output_length`, `get_delay`) is
computed here from the list of convolutions, without building a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from transformers import DacConfig

from core.config import JsonConfig
from core.errors import CheckpointError

# The parameters of the official `DAC.__init__`; its loader keeps only these kwargs.
OFFICIAL_KWARGS = (
    "encoder_dim",
    "encoder_rates",
    "latent_dim",
    "decoder_dim",
    "decoder_rates",
    "n_codebooks",
    "codebook_size",
    "codebook_dim",
    "quantizer_dropout",
    "sample_rate",
)


@dataclass(frozen=True)
class DacCodecConfig(JsonConfig):
    """The official DAC constructor kwargs (those `DacConfig` can express).

    Attributes:
        encoder_dim: Channels after the first encoder conv; doubled by each stride.
        encoder_rates: Encoder strides; their product is the hop (samples per frame).
        latent_dim: Channels of the latent; None means `encoder_dim * 2**len(encoder_rates)`,
            the only value `DacConfig` can express.
        decoder_dim: Channels after the first decoder conv; halved by each stride.
        decoder_rates: Decoder strides; must be `encoder_rates` reversed.
        n_codebooks: Residual quantiser stages.
        codebook_size: Codes per codebook (a power of two).
        codebook_dim: Width of each stage's factorised code space.
        sample_rate: The model's audio rate (Hz).
    """

    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    latent_dim: int | None = None
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    n_codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8
    sample_rate: int = 44100

    def __post_init__(self) -> None:
        derived = self.encoder_dim * 2 ** len(self.encoder_rates)
        if self.latent_dim is not None and self.latent_dim != derived:
            raise CheckpointError(
                f"DAC latent_dim {self.latent_dim} != encoder_dim * 2**len(encoder_rates) = "
                f"{derived}: transformers' DacConfig cannot express this model (e.g. the "
                "44khz_16kbps release) without an extension"
            )
        if tuple(self.decoder_rates) != tuple(reversed(self.encoder_rates)):
            raise CheckpointError(
                f"DAC decoder_rates {list(self.decoder_rates)} are not the encoder rates "
                f"{list(self.encoder_rates)} reversed, which transformers' DacConfig requires"
            )
        if type(self.codebook_dim) is not int:
            raise CheckpointError(
                f"DAC codebook_dim {self.codebook_dim!r}: transformers' DacConfig has one int "
                "for every stage"
            )
        if self.latent_dim is not None:  # The explicit default: stored as None, compares equal.
            object.__setattr__(self, "latent_dim", None)
        if self.codebook_size & (self.codebook_size - 1):
            raise ValueError(f"DAC codebook_size {self.codebook_size} is not a power of two")

    @property
    def latent(self) -> int:
        """Channels of the latent `z` (the resolved `latent_dim`)."""
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    @property
    def hop(self) -> int:
        """Samples per code frame at `sample_rate` (the product of the encoder rates)."""
        return math.prod(self.encoder_rates)

    @property
    def frame_rate(self) -> float:
        """Code frames per second."""
        return self.sample_rate / self.hop

    @property
    def delay(self) -> int:
        """The official `CodecMixin.get_delay()`: samples of context on each side of a window."""
        return conv_delay(self)

    def to_hf(self) -> DacConfig:
        """The transformers config that builds this model as a `DacModel`."""
        return DacConfig(
            encoder_hidden_size=self.encoder_dim,
            downsampling_ratios=list(self.encoder_rates),
            decoder_hidden_size=self.decoder_dim,
            n_codebooks=self.n_codebooks,
            codebook_size=self.codebook_size,
            codebook_dim=self.codebook_dim,
            sampling_rate=self.sample_rate,
        )

    @classmethod
    def from_hf(cls, hf: DacConfig) -> DacCodecConfig:
        """The config of a transformers `DacConfig` (e.g. a Hugging Face model directory's)."""
        rates = tuple(int(r) for r in hf.downsampling_ratios)
        return cls(
            encoder_dim=int(hf.encoder_hidden_size),
            encoder_rates=rates,
            decoder_dim=int(hf.decoder_hidden_size),
            decoder_rates=tuple(reversed(rates)),
            n_codebooks=int(hf.n_codebooks),
            codebook_size=int(hf.codebook_size),
            codebook_dim=int(hf.codebook_dim),
            sample_rate=int(hf.sampling_rate),
        )

    @classmethod
    def from_official_kwargs(
        cls, kwargs: Mapping[str, Any], source: str = "kwargs"
    ) -> DacCodecConfig:
        """The config of an official checkpoint's `metadata["kwargs"]`.

        Like the official loader, keys that are not `DAC.__init__` parameters are ignored;
        `quantizer_dropout` is accepted and dropped (no effect in eval).

        Args:
            kwargs: The constructor kwargs (plain ints, lists of ints, floats, bools, None).
            source: Name of the file, for error messages.

        Returns:
            The config.

        Raises:
            CheckpointError: if a value is not plain data, or the model is not expressible.
        """
        kept = {k: v for k, v in kwargs.items() if k in OFFICIAL_KWARGS}
        for name, value in kept.items():
            plain = value is None or isinstance(value, bool | int | float)
            ints = isinstance(value, list | tuple) and all(type(v) is int for v in value)
            plain = plain or ints
            if not plain:
                raise CheckpointError(f"{source}: kwarg {name!r} is not plain data: {value!r}")
        kept.pop("quantizer_dropout", None)
        for name in ("encoder_rates", "decoder_rates"):
            if name in kept:
                kept[name] = tuple(kept[name])
        try:
            return cls(**kept)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: {error}") from error


_RELEASE_44K = DacCodecConfig()
_RATES_16K = {"encoder_rates": (2, 4, 5, 8), "decoder_rates": (8, 5, 4, 2)}
_TINY = {"encoder_dim": 4, "decoder_dim": 32, "n_codebooks": 4, "codebook_size": 64}

PRESETS: dict[str, DacCodecConfig] = {
    # The released models (kwargs of the descript-audio-codec training configs).
    "44khz_8kbps": _RELEASE_44K,
    "24khz_8kbps": DacCodecConfig(**_RATES_16K, n_codebooks=32, sample_rate=24000),
    "16khz_8kbps": DacCodecConfig(**_RATES_16K, n_codebooks=12, sample_rate=16000),
    # The golden vectors' tiny models; "tiny" is the demo and test preset.
    "tiny_44k": DacCodecConfig(**_TINY),
    "tiny_16k": DacCodecConfig(**_TINY, **_RATES_16K, sample_rate=16000),
    "tiny": DacCodecConfig(**_TINY),
}


def preset(name: str) -> DacCodecConfig:
    """The config of preset `name`.

    Raises:
        KeyError: naming the known presets when `name` is not one.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown DAC preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]


def conv_layers(config: DacCodecConfig) -> Iterator[tuple[bool, int, int, int]]:
    """Every convolution of the official model in module order: (transposed, k, stride, dilation).

    Encoder, quantiser (1x1 projections, which leave lengths unchanged), decoder, as
    `DAC.modules()` lists them; `get_output_length` and `get_delay` walk this list.
    """

    def residual_units() -> Iterator[tuple[bool, int, int, int]]:
        for dilation in (1, 3, 9):
            yield (False, 7, 1, dilation)  # The dilated conv of each residual unit.
            yield (False, 1, 1, 1)  # Its closing 1x1 conv.

    yield (False, 7, 1, 1)
    for stride in config.encoder_rates:
        yield from residual_units()
        yield (False, 2 * stride, stride, 1)
    yield (False, 3, 1, 1)
    for _ in range(2 * config.n_codebooks):
        yield (False, 1, 1, 1)
    yield (False, 7, 1, 1)
    for stride in config.decoder_rates:
        yield (True, 2 * stride, stride, 1)
        yield from residual_units()
    yield (False, 7, 1, 1)


def output_length(config: DacCodecConfig, input_length: int) -> int:
    """The official `get_output_length`: samples out of encode+decode with conv padding off."""
    length: float = input_length
    for transposed, k, s, d in conv_layers(config):
        if transposed:
            length = (length - 1) * s + d * (k - 1) + 1
        else:
            length = ((length - d * (k - 1) - 1) / s) + 1
        length = math.floor(length)
    return int(length)


def conv_delay(config: DacCodecConfig) -> int:
    """The official `get_delay`: half the context the unpadded network eats, in samples."""
    out = output_length(config, 0)
    length: float = out
    for transposed, k, s, d in reversed(list(conv_layers(config))):
        if transposed:
            length = ((length - d * (k - 1) - 1) / s) + 1
        else:
            length = (length - 1) * s + d * (k - 1) + 1
        length = math.ceil(length)
    return int((length - out) // 2)
