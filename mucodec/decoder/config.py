"""Configs of the MuCodec decoder side (tokens -> 48 kHz stereo), as frozen dataclasses.

The decoder is a chain of independently configured parts:

* `ConditionerConfig`: RVQ code -> embedding -> conditioning grid (`flow.CodeConditioner`).
* `DiTConfig`: the flow-matching velocity network (`dit.DiT`).
* `FlowConfig`: latent geometry, the feature normaliser and the Euler solver constant
  `sigma_min`; bundles the two configs above.
* `MelVAEConfig`: the AudioLDM-48k Mel-VAE decoder (`vae.MelVAEDecoder`).
* `VocoderConfig`: the 48 kHz HiFi-GAN and its chunked inference (`vocoder.HiFiGAN`).
* `WindowConfig`: the official windowing of long code sequences.
* `SamplingConfig`: run-time choices (steps, guidance, seed, "official way"); the compute
  precision is not one of them: it is given when the decoder is built or loaded.

`DecoderConfig` bundles them. Every config round-trips through JSON (`to_json` /
`from_json`, the mixin of `mucodec.encoder.config`) so that our checkpoints carry their config.

Presets (`decoder_preset(name)`): `official` (the released `mucodec.pt` +
`audioldm_48k.pth`) and `tiny` (the golden-vector models of `shared/golden/decoder`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from core.config import JsonConfig
from mucodec.config import CONFIG_FORMAT_VERSION, QuantizerConfig

__all__ = [
    "DECODER_PRESETS",
    "ConditionerConfig",
    "DecoderConfig",
    "DiTConfig",
    "FlowConfig",
    "MelVAEConfig",
    "SamplingConfig",
    "VocoderConfig",
    "WindowConfig",
    "decoder_preset",
    "with_codebooks",
]


@dataclass(frozen=True)
class ConditionerConfig(JsonConfig):
    """Codes -> conditioning grid: RVQ `from_codes`, a Linear, a reshape to latent frames.

    Attributes:
        quantizer: The RVQ whose codebooks embed the codes (shared layout with the encoder).
        cond_dim: Output width of the per-code Linear; read as `(channels / codes_per_frame)`
            channels x `latent_freq` bins when reshaped to the latent grid.
        codes_per_frame: Codes per latent frame (25 Hz codes, 12.5 Hz latents).
    """

    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    cond_dim: int = 512
    codes_per_frame: int = 2


@dataclass(frozen=True)
class DiTConfig(JsonConfig):
    """The 2-D DiT velocity network (diffusers `Transformer2DModel`, patch input, adaLN-single).

    Attributes:
        in_channels: Input channels `[x | in-context | cond]`.
        out_channels: Velocity channels.
        patch_size: Square patch side on the (time, frequency) grid.
        num_layers: Transformer blocks.
        num_heads: Attention heads.
        head_dim: Width of one head; the model width is `num_heads * head_dim`.
        mlp_ratio: Feed-forward hidden width / model width.
        norm_eps: Epsilon of the (affine-free) LayerNorms.
        sample_size: The reference's `sample_size`; only sets the sin-cos table's base grid
            and interpolation scale (the table itself is recomputed for every input size).
        time_proj_dim: Width of the sinusoidal timestep features.
        time_scale: Factor on `t in [0, 1)` before the sinusoids (diffusers' 1000 steps).
    """

    in_channels: int = 96
    out_channels: int = 32
    patch_size: int = 2
    num_layers: int = 24
    num_heads: int = 22
    head_dim: int = 72
    mlp_ratio: int = 4
    norm_eps: float = 1e-6
    sample_size: int = 384
    time_proj_dim: int = 512
    time_scale: float = 1000.0

    @property
    def width(self) -> int:
        """Model width D."""
        return self.num_heads * self.head_dim

    @property
    def pos_base_size(self) -> int:
        """Base grid of the sin-cos table (`sample_size / patch_size`)."""
        return self.sample_size // self.patch_size

    @property
    def pos_interpolation_scale(self) -> float:
        """Interpolation scale of the sin-cos table (`max(sample_size // 64, 1)`)."""
        return float(max(self.sample_size // 64, 1))


@dataclass(frozen=True)
class FlowConfig(JsonConfig):
    """Code -> latent flow matching: conditioner, estimator, normaliser, solver constant.

    Attributes:
        latent_channels: Latent channels (2 stereo sides x 16 VAE channels).
        latent_freq: Latent frequency bins (256 mel bins / 8).
        conditioner: Codes -> conditioning grid.
        estimator: Velocity network; `in_channels` must be `3 * latent_channels`.
        normalizer_samples: The reference's `num_samples`: statistics with fewer `counts`
            would still be updating (we freeze them and warn, see `normalizer.py`).
        sigma_min: Floor of the noise scale in the in-context interpolant.
    """

    latent_channels: int = 32
    latent_freq: int = 32
    conditioner: ConditionerConfig = field(default_factory=ConditionerConfig)
    estimator: DiTConfig = field(default_factory=DiTConfig)
    normalizer_samples: int = 100000
    sigma_min: float = 1e-4

    def __post_init__(self) -> None:
        if self.estimator.in_channels != 3 * self.latent_channels:
            raise ValueError(
                f"estimator.in_channels {self.estimator.in_channels} != 3 * latent_channels "
                f"{self.latent_channels} ([x | in-context | cond])"
            )
        if self.estimator.out_channels != self.latent_channels:
            raise ValueError("estimator.out_channels must equal latent_channels")
        per_code = self.latent_channels // self.conditioner.codes_per_frame * self.latent_freq
        if self.conditioner.cond_dim != per_code:
            raise ValueError(
                f"conditioner.cond_dim {self.conditioner.cond_dim} != latent_channels / "
                f"codes_per_frame * latent_freq = {per_code}"
            )


@dataclass(frozen=True)
class MelVAEConfig(JsonConfig):
    """AudioLDM-48k `AutoencoderKL` decoder side (latent -> log-mel).

    Attributes:
        ch: Base width; level i has `ch * ch_mult[i]` channels.
        ch_mult: Width multipliers, finest level first (as in the checkpoint's `up.{i}`).
        num_res_blocks: The reference's `num_res_blocks`; each decoder level has one more.
        z_channels: Channels entering `conv_in` (after `post_quant_conv`).
        embed_dim: Latent channels (input of `post_quant_conv`).
        out_channels: Output image channels (1 mel "image").
        mel_bins: Mel bins of the output (`latent_freq * 2 ** (levels - 1)`).
        num_groups: GroupNorm groups.
        norm_eps: GroupNorm epsilon.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_res_blocks: int = 2
    z_channels: int = 16
    embed_dim: int = 16
    out_channels: int = 1
    mel_bins: int = 256
    num_groups: int = 32
    norm_eps: float = 1e-6

    @property
    def upsampling(self) -> int:
        """Time and frequency up-sampling factor (8 for four levels)."""
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class VocoderConfig(JsonConfig):
    """HiFi-GAN (`Generator_old`, resblock "1") at 48 kHz and its chunked inference.

    Attributes:
        num_mels: Mel bins in.
        upsample_rates: Transposed-conv strides (product = hop_length).
        upsample_kernel_sizes: Transposed-conv kernels.
        upsample_initial_channel: Channels after `conv_pre`; halved at every stage.
        resblock_kernel_sizes: Kernels of the parallel ResBlocks (averaged) per stage.
        resblock_dilations: Dilations of every ResBlock (the reference's `[[1, 3, 5]] * 4`).
        lrelu_slope: Leaky-ReLU slope inside the network.
        final_lrelu_slope: Slope before `conv_post` (the reference uses the default 0.01).
        sample_rate: Output rate (Hz).
        hop_length: Samples per mel frame.
        chunk_frames: Mel frames per chunk in the official chunked inference.
        chunk_hop: Hop between chunk starts (frames); chunks overlap by 3/4.
    """

    num_mels: int = 256
    upsample_rates: tuple[int, ...] = (6, 5, 4, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (12, 10, 8, 4, 4)
    upsample_initial_channel: int = 1536
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11, 15)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)
    lrelu_slope: float = 0.1
    final_lrelu_slope: float = 0.01
    sample_rate: int = 48000
    hop_length: int = 480
    chunk_frames: int = 1024
    chunk_hop: int = 256

    def __post_init__(self) -> None:
        product = 1
        for rate in self.upsample_rates:
            product *= rate
        if product != self.hop_length:
            raise ValueError(f"upsample_rates multiply to {product}, not hop {self.hop_length}")


@dataclass(frozen=True)
class WindowConfig(JsonConfig):
    """Official windowing of long code sequences (`MuCodec.code2sound`).

    Attributes:
        window_codes: Codes per window (1024 = 40.96 s).
        hop_codes: Codes between window starts (768); windows overlap by
            `window_codes - hop_codes` codes, which become the next window's in-context
            frames and the waveform cross-fade.
        token_rate: Codes per second.
    """

    window_codes: int = 1024
    hop_codes: int = 768
    token_rate: int = 25

    @property
    def overlap_codes(self) -> int:
        """Codes shared by consecutive windows (256)."""
        return self.window_codes - self.hop_codes

    @classmethod
    def of_length(cls, window_codes: int, token_rate: int = 25) -> WindowConfig:
        """A window of `window_codes` in the official proportions: a quarter overlaps.

        A shorter window renders less padding around a short segment: the decoder renders
        whole windows, so a 2 s segment costs a full 40.96 s window at the default size.

        Raises:
            ValueError: if `window_codes` is not a positive multiple of 4.
        """
        if window_codes < 4 or window_codes % 4:
            raise ValueError(f"a decoder window must be a positive multiple of 4 codes, "
                             f"not {window_codes}")  # fmt: skip
        return cls(window_codes=window_codes, hop_codes=window_codes * 3 // 4,
                   token_rate=token_rate)  # fmt: skip


@dataclass(frozen=True)
class SamplingConfig(JsonConfig):
    """Run-time choices of `MuCodecDecoder.decode`.

    Attributes:
        num_steps: Euler steps per window.
        guidance_scale: Classifier-free guidance scale (<= 1 disables guidance).
        seed: Default noise seed of every item (noise depends on item seed and window
            index only, never on batch composition).
        vocoder_chunks: Vocode in the reference's 3/4-overlapping 1024-frame chunks (True,
            bit-faithful) or each window at once (False: 4x less vocoder work, differs
            from the reference only near chunk seams).
        official_way: Replay the reference's execution instead, for comparison: one item
            at a time, estimator under CUDA fp16 autocast with the guidance combined in
            fp16, VAE and vocoder in float32, chunked vocoder. Overrides the decoder's
            `precision` and `vocoder_chunks`.
    """

    num_steps: int = 50
    guidance_scale: float = 1.5
    seed: int = 0
    vocoder_chunks: bool = True
    official_way: bool = False

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingConfig:
        """`JsonConfig.from_dict`, also reading configs saved before precision moved out.

        Checkpoints written by earlier versions carry `"dtype": "float32"` here; it is
        accepted and ignored (the precision is now an argument of the loaders).

        Args:
            data: Field name -> JSON value.

        Returns:
            The sampling config.

        Raises:
            ValueError: on unknown keys, or a legacy `dtype` other than "float32" (pass
                it as `precision=` to the loader instead).
        """
        data = dict(data)
        legacy = data.pop("dtype", "float32")
        if legacy != "float32":
            raise ValueError(
                f"SamplingConfig.dtype={legacy!r} is no longer a config field; give "
                f"precision={legacy!r} to build_decoder / load_decoder instead"
            )
        return super().from_dict(data)


@dataclass(frozen=True)
class DecoderConfig(JsonConfig):
    """Everything needed to build a MuCodec decoder.

    Attributes:
        name: Preset or user name.
        flow: Code -> latent flow matching.
        vae: Mel-VAE decoder; `2 * vae.embed_dim` must be `flow.latent_channels`.
        vocoder: HiFi-GAN; `vocoder.num_mels` must be `vae.mel_bins`.
        window: Windowing of long sequences.
        sampling: Default run-time choices.
        format_version: Version of this config's JSON layout.
    """

    name: str = "official"
    flow: FlowConfig = field(default_factory=FlowConfig)
    vae: MelVAEConfig = field(default_factory=MelVAEConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    format_version: int = CONFIG_FORMAT_VERSION

    def __post_init__(self) -> None:
        if 2 * self.vae.embed_dim != self.flow.latent_channels:
            raise ValueError("flow.latent_channels must be 2 (stereo) * vae.embed_dim")
        if self.vae.mel_bins != self.flow.latent_freq * self.vae.upsampling:
            raise ValueError("vae.mel_bins must be flow.latent_freq * vae.upsampling")
        if self.vocoder.num_mels != self.vae.mel_bins:
            raise ValueError("vocoder.num_mels must equal vae.mel_bins")
        rendered = (
            self.vocoder.hop_length * self.vae.upsampling // self.flow.conditioner.codes_per_frame
        )
        if rendered != self.samples_per_code:
            raise ValueError(
                f"one code renders to {rendered} samples but sample_rate / token_rate is "
                f"{self.samples_per_code}"
            )
        if self.window.overlap_codes % self.flow.conditioner.codes_per_frame:
            raise ValueError("the window overlap must be a whole number of latent frames")
        if self.format_version != CONFIG_FORMAT_VERSION:
            raise ValueError(
                f"config format_version {self.format_version} is not supported "
                f"(this code reads version {CONFIG_FORMAT_VERSION})"
            )

    @property
    def samples_per_code(self) -> int:
        """Output samples per code (1920 at 48 kHz, 25 Hz)."""
        return self.vocoder.sample_rate // self.window.token_rate


def official() -> DecoderConfig:
    """The released decoder: `mucodec.pt` (flow side) + `audioldm_48k.pth` (VAE, vocoder).

    Returns:
        Its config.
    """
    return DecoderConfig(name="official")


def tiny() -> DecoderConfig:
    """The golden-vector models (`main_tiny.safetensors`, `vae_tiny.safetensors`).

    Returns:
        Their config.
    """
    return DecoderConfig(
        name="tiny",
        flow=FlowConfig(
            conditioner=ConditionerConfig(
                quantizer=QuantizerConfig(
                    input_dim=64, n_codebooks=1, codebook_size=256, codebook_dim=32
                ),
            ),
            estimator=DiTConfig(num_layers=2, num_heads=2, head_dim=32),
        ),
        vae=MelVAEConfig(ch=32, ch_mult=(1, 1, 1, 2), num_res_blocks=1),
        vocoder=VocoderConfig(upsample_initial_channel=32),
    )


DECODER_PRESETS: dict[str, DecoderConfig] = {"official": official(), "tiny": tiny()}


def decoder_preset(name: str) -> DecoderConfig:
    """Returns the named decoder preset.

    Args:
        name: A key of `DECODER_PRESETS` ("official", "tiny").

    Returns:
        The config (frozen: share it freely).

    Raises:
        KeyError: naming the known presets when `name` is not one of them.
    """
    try:
        return DECODER_PRESETS[name]
    except KeyError:
        raise KeyError(
            f"unknown decoder preset {name!r}; known: {sorted(DECODER_PRESETS)}"
        ) from None


def with_codebooks(config: DecoderConfig, n_codebooks: int, codebook_size: int) -> DecoderConfig:
    """`config` with its conditioning RVQ resized to the tokens' layout.

    A decoder with random weights only needs the tokens' codebook layout, not the widths
    of the tokenizer that made them (tests, the demo, speed figures).
    """
    conditioner = config.flow.conditioner
    quantizer = dataclasses.replace(
        conditioner.quantizer, n_codebooks=n_codebooks, codebook_size=codebook_size
    )
    flow = dataclasses.replace(
        config.flow, conditioner=dataclasses.replace(conditioner, quantizer=quantizer)
    )
    return dataclasses.replace(config, flow=flow)
