"""Configs of the MuCodec encoder side (audio -> tokens), as frozen dataclasses.

The tokenizer is three parts in a row, each with its own config:

* `FrontendConfig`: 48 kHz stereo -> peak normalisation -> mono -> 24 kHz -> normalised
  log-mel (MuQ's "melspec_2048" features).
* `MuEncoderConfig`: MuQ's Conv2dSubsampling and Conformer stack, and which hidden state
  the tokens are read from.
* `QuantizerConfig`: the factorised, L2-normalised residual vector quantiser (DAC style).

`TokenizerConfig` bundles the three. Every config round-trips through JSON
(`to_json` / `from_json`) so that our checkpoints can carry the config they were built with.

Presets (`preset(name)`):

* `official`: the released 0.35 kbps model. MuQ with a 1024-d, 12-block Conformer, tokens
  from `layer_results[6]` (the script's `layer_num = 7`), 1 codebook x 16384, dim 32, 25 Hz.
* `high_bitrate`: the paper's 4 x 10000 layout on the same encoder (no released weights).
* `tiny`: the golden-vector model (256-d, 3 blocks, 4 heads, `layer_results[2]`,
  1 x 1024 codes) for fast tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import JsonConfig
from mucodec.config import CONFIG_FORMAT_VERSION, QuantizerConfig


@dataclass(frozen=True)
class FrontendConfig(JsonConfig):
    """Waveform -> normalised log-mel, as in `fetch_codes_batch` and MuQ's preprocessing.

    Attributes:
        input_sample_rate: Rate of the stereo input (Hz).
        encoder_sample_rate: Rate MuQ works at (Hz); the input is resampled to it.
        segment_peak_threshold: `model.py: preprocess_audio`: a channel of a segment whose
            peak exceeds this is divided by peak / threshold, per channel.
        song_peak_threshold: `generate.py: preprocess_audio`: a song whose joint peak over
            both channels exceeds this is divided by peak / threshold, before windowing.
        n_fft: STFT size (and window length), Hann window, centred, reflect padding.
        hop_length: STFT hop at the encoder rate (240 -> 100 mel frames per second).
        n_mels: Number of HTK mel bands without area normalisation, 0 Hz to Nyquist.
        mel_mean: MuQ's hard-coded "melspec_2048" mean of the dB features.
        mel_std: MuQ's hard-coded "melspec_2048" standard deviation.
        token_rate: Tokens per second; the 24 kHz input is trimmed to a multiple of
            encoder_sample_rate // token_rate samples.
    """

    input_sample_rate: int = 48000
    encoder_sample_rate: int = 24000
    segment_peak_threshold: float = 0.9
    song_peak_threshold: float = 0.8
    n_fft: int = 2048
    hop_length: int = 240
    n_mels: int = 128
    mel_mean: float = 6.768444971712967
    mel_std: float = 18.417922652295623
    token_rate: int = 25

    @property
    def samples_per_token(self) -> int:
        """Samples per token at the encoder rate (960 at 24 kHz, 25 Hz)."""
        return self.encoder_sample_rate // self.token_rate

    @property
    def input_samples_per_token(self) -> int:
        """Samples per token at the input rate (1920 at 48 kHz, 25 Hz)."""
        return self.input_sample_rate // self.token_rate


@dataclass(frozen=True)
class MuEncoderConfig(JsonConfig):
    """MuQ encoder: Conv2dSubsampling + Conformer (HF Wav2Vec2-Conformer, rotary).

    `depth` is the depth of the checkpoint (the official one has 12 blocks); only the
    first `output_layer` blocks are built and run, because the tokens are read from
    `layer_results[output_layer]` (0 = subsampling output, i = after block i).

    Attributes:
        n_mels: Mel bands into the subsampling.
        conv_dim: Channels of the 2-D convolutions.
        n_subsampling_blocks: Residual conv blocks, each halving time and frequency.
        dim: Model width.
        depth: Conformer blocks in the checkpoint.
        num_heads: Attention heads (head size dim // num_heads).
        ffn_dim: Hidden width of each half-step feed-forward.
        depthwise_kernel_size: Kernel of the convolution module's depthwise conv.
        layer_norm_eps: Epsilon of every LayerNorm (and of the BatchNorms).
        rotary_base: Rotary embedding base.
        output_layer: Hidden-state index the tokens come from (official script:
            `layer_num - 1`).
        pos_conv_kernel: Kernel of HF's unused `pos_conv_embed` (checkpoint shapes only).
        pos_conv_groups: Groups of that unused conv (checkpoint shapes only).
        pretrain_codebook_size: Size of MuQ's unused pre-training head / target codebook.
        pretrain_codebook_dim: Dim of MuQ's unused random-projection target codebook.
    """

    n_mels: int = 128
    conv_dim: int = 512
    n_subsampling_blocks: int = 2
    dim: int = 1024
    depth: int = 12
    num_heads: int = 16
    ffn_dim: int = 4096
    depthwise_kernel_size: int = 31
    layer_norm_eps: float = 1e-5
    rotary_base: float = 10000.0
    output_layer: int = 6
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    pretrain_codebook_size: int = 4096
    pretrain_codebook_dim: int = 16

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
        if not 0 <= self.output_layer <= self.depth:
            raise ValueError(f"output_layer {self.output_layer} not in [0, depth={self.depth}]")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.dim // self.num_heads

    @property
    def n_blocks_run(self) -> int:
        """Conformer blocks that influence `layer_results[output_layer]`.

        The last hidden state (`output_layer == depth`) would also need the encoder's final
        LayerNorm; `MuEncoder` applies it in that case.
        """
        return self.output_layer

    @property
    def subsampling_factor(self) -> int:
        """Mel frames per output frame (4 for 2 blocks)."""
        return 2**self.n_subsampling_blocks


@dataclass(frozen=True)
class TokenizerConfig(JsonConfig):
    """Everything needed to build a MuCodec tokenizer (front end, encoder, RVQ).

    Attributes:
        name: Preset or user name, recorded in token provenance.
        frontend: Front-end settings.
        encoder: MuEncoder settings.
        quantizer: RVQ settings; `quantizer.input_dim` must equal `encoder.dim`.
        format_version: Version of this config's JSON layout.
    """

    name: str = "official"
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: MuEncoderConfig = field(default_factory=MuEncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    format_version: int = CONFIG_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.quantizer.input_dim != self.encoder.dim:
            raise ValueError(
                f"quantizer.input_dim {self.quantizer.input_dim} != encoder.dim {self.encoder.dim}"
            )
        if self.encoder.n_mels != self.frontend.n_mels:
            raise ValueError(
                f"encoder.n_mels {self.encoder.n_mels} != frontend.n_mels {self.frontend.n_mels}"
            )
        if self.format_version != CONFIG_FORMAT_VERSION:
            raise ValueError(
                f"config format_version {self.format_version} is not supported "
                f"(this code reads version {CONFIG_FORMAT_VERSION})"
            )


def official() -> TokenizerConfig:
    """The released 0.35 kbps MuCodec tokenizer (`muq.pt` + `mucodec.pt`).

    Returns:
        Its config.
    """
    return TokenizerConfig(name="official")


def high_bitrate() -> TokenizerConfig:
    """The paper's 4 x 10000 RVQ layout on the official encoder (no released weights).

    Returns:
        Its config.
    """
    return TokenizerConfig(
        name="high_bitrate",
        quantizer=QuantizerConfig(n_codebooks=4, codebook_size=10000),
    )


def tiny() -> TokenizerConfig:
    """The golden-vector model: 256-d, 3 blocks, 4 heads, tokens from layer_results[2].

    Returns:
        Its config.
    """
    return TokenizerConfig(
        name="tiny",
        encoder=MuEncoderConfig(
            conv_dim=64,
            dim=256,
            depth=3,
            num_heads=4,
            ffn_dim=512,
            output_layer=2,
            pos_conv_kernel=16,
            pos_conv_groups=16,
            pretrain_codebook_size=64,
        ),
        quantizer=QuantizerConfig(input_dim=256, n_codebooks=1, codebook_size=1024),
    )


PRESETS: dict[str, TokenizerConfig] = {
    "official": official(),
    "high_bitrate": high_bitrate(),
    "tiny": tiny(),
}


def preset(name: str) -> TokenizerConfig:
    """Returns the named preset config.

    Args:
        name: A key of `PRESETS`.

    Returns:
        The config (frozen: share it freely).

    Raises:
        KeyError: naming the known presets when `name` is not one of them.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None
