"""EnCodec's shape and settings: one frozen config, its presets, and the map to transformers.

`EncodecCodecConfig` holds what the official builders (`encodec_model_24khz`,
`encodec_model_48khz`) fix in code: SEANet sizes, norm, causality, the quantiser, the target
bandwidths and the 48 kHz model's chunking. `to_hf_config` turns it into the
`transformers.EncodecConfig` that `transformers.EncodecModel` is built from.

Presets: "24khz" and "48khz" are the released models' shapes; "tiny_24k" and "tiny_48k" are
the tiny models of the golden vectors (`shared/golden/encodec/*_config.json`); "tiny" is
"tiny_48k", because the pipeline's segments are 48 kHz stereo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from transformers import EncodecConfig

from core.config import JsonConfig

__all__ = [
    "PRESETS",
    "EncodecCodecConfig",
    "codebooks_for_bandwidth",
    "from_hf_config",
    "preset",
    "to_hf_config",
]


@dataclass(frozen=True)
class EncodecCodecConfig(JsonConfig):
    """An EnCodec model, in the official builders' terms.

    Attributes:
        channels: Audio channels the model codes (1: mono 24 kHz; 2: joint stereo 48 kHz).
        sample_rate: Rate the model runs at (Hz).
        causal: Causal convolutions (24 kHz) or centred ones (48 kHz).
        norm: "weight_norm" (24 kHz) or "time_group_norm" (48 kHz).
        normalize: Divide each chunk by its RMS scale before encoding (48 kHz).
        segment: Chunk length in seconds, or None to encode the whole input as one chunk.
        overlap: Fraction of a chunk shared with the next one.
        dimension: Channels of the embeddings the quantiser sees.
        n_filters: Channels of the first SEANet conv.
        n_residual_layers: Residual blocks per SEANet stage.
        ratios: Up-sampling ratios in decoder order (the encoder reverses them).
        lstm: LSTM layers at the end of the encoder / start of the decoder.
        n_q: Codebooks of the residual quantiser.
        bins: Codes per codebook.
        target_bandwidths: Bandwidths the model offers (kbps), ascending.
    """

    channels: int = 1
    sample_rate: int = 24_000
    causal: bool = True
    norm: str = "weight_norm"
    normalize: bool = False
    segment: float | None = None
    overlap: float = 0.01
    dimension: int = 128
    n_filters: int = 32
    n_residual_layers: int = 1
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    lstm: int = 2
    n_q: int = 32
    bins: int = 1024
    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)

    @property
    def hop_length(self) -> int:
        """Input samples per code frame (product of the ratios)."""
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> int:
        """Code frames per second, `ceil(sample_rate / hop)` as the official model rounds."""
        return math.ceil(self.sample_rate / self.hop_length)

    @property
    def segment_length(self) -> int | None:
        """Chunk length in samples, or None for one chunk holding the whole input."""
        return None if self.segment is None else int(self.segment * self.sample_rate)

    @property
    def segment_stride(self) -> int | None:
        """Samples between chunk starts: `max(1, int((1 - overlap) * segment_length))`."""
        length = self.segment_length
        return None if length is None else max(1, int((1 - self.overlap) * length))


_24KHZ = EncodecCodecConfig()
_48KHZ = EncodecCodecConfig(
    channels=2,
    sample_rate=48_000,
    causal=False,
    norm="time_group_norm",
    normalize=True,
    segment=1.0,
    overlap=0.01,
    n_q=16,
    target_bandwidths=(3.0, 6.0, 12.0, 24.0),
)
_TINY = {"dimension": 16, "n_filters": 4, "n_q": 4, "bins": 64}
_TINY_48K = replace(_48KHZ, **_TINY, target_bandwidths=(0.9, 1.8, 3.6))

PRESETS: dict[str, EncodecCodecConfig] = {
    # The released models' shapes.
    "24khz": _24KHZ,
    "48khz": _48KHZ,
    # The golden vectors' tiny models; "tiny" is the 48 kHz one, like the pipeline's segments.
    "tiny_24k": replace(_24KHZ, **_TINY, target_bandwidths=(0.45, 0.9, 1.8)),
    "tiny_48k": _TINY_48K,
    "tiny": _TINY_48K,
}


def preset(name: str) -> EncodecCodecConfig:
    """The config of preset `name`.

    Raises:
        KeyError: naming the known presets when `name` is not one.
    """
    if name not in PRESETS:
        raise KeyError(f"encodec: unknown preset {name!r}; known: {tuple(PRESETS)}")
    return PRESETS[name]


def codebooks_for_bandwidth(config: EncodecCodecConfig, bandwidth: float) -> int:
    """Codebooks the official quantiser uses at `bandwidth` kbps.

    The official rule: `max(1, floor(bw * 1000 / (log2(bins) * frame_rate)))`, e.g. 6 kbps at
    75 Hz with 1024 codes -> 8 codebooks.

    Args:
        config: The model.
        bandwidth: One of `config.target_bandwidths` (kbps).

    Returns:
        The number of codebooks, at most `config.n_q`.

    Raises:
        ValueError: if the model does not offer `bandwidth` (the official
            `set_target_bandwidth` refuses it too).
    """
    if not any(math.isclose(bandwidth, b) for b in config.target_bandwidths):
        raise ValueError(
            f"encodec: bandwidth {bandwidth:g} kbps is not offered by this model; "
            f"choose one of {[f'{b:g}' for b in config.target_bandwidths]}"
        )
    per_codebook = math.log2(config.bins) * config.frame_rate
    return min(config.n_q, max(1, math.floor(bandwidth * 1000 / per_codebook)))


def to_hf_config(config: EncodecCodecConfig) -> EncodecConfig:
    """The `transformers.EncodecConfig` of the same model.

    Raises:
        ValueError: if transformers would derive a different number of codebooks (it
            derives n_q from the largest bandwidth and assumes `bins` is a power of two).
    """
    hf = EncodecConfig(
        target_bandwidths=list(config.target_bandwidths),
        sampling_rate=config.sample_rate,
        audio_channels=config.channels,
        normalize=config.normalize,
        chunk_length_s=config.segment,
        overlap=config.overlap if config.segment is not None else None,
        hidden_size=config.dimension,
        num_filters=config.n_filters,
        num_residual_layers=config.n_residual_layers,
        upsampling_ratios=list(config.ratios),
        norm_type=config.norm,
        use_causal_conv=config.causal,
        num_lstm_layers=config.lstm,
        codebook_size=config.bins,
        codebook_dim=config.dimension,
        use_conv_shortcut=True,
    )
    if hf.num_quantizers != config.n_q:
        raise ValueError(
            f"encodec: transformers derives {hf.num_quantizers} codebooks from the bandwidths "
            f"{config.target_bandwidths}, the config says n_q={config.n_q}"
        )
    return hf


def from_hf_config(hf: EncodecConfig) -> EncodecCodecConfig:
    """Our config of a `transformers.EncodecConfig` (e.g. a Hugging Face model directory's).

    Raises:
        ValueError: if the model uses a setting our config cannot express (identity
            shortcuts, other kernel sizes, dilation growth, padding, compression or trim).
    """
    fixed = {
        "use_conv_shortcut": True,
        "kernel_size": 7,
        "last_kernel_size": 7,
        "residual_kernel_size": 3,
        "dilation_growth_rate": 2,
        "pad_mode": "reflect",
        "compress": 2,
        "trim_right_ratio": 1.0,
    }
    odd = {k: getattr(hf, k) for k, v in fixed.items() if getattr(hf, k) != v}
    if odd:
        raise ValueError(f"encodec: unsupported settings in the transformers config: {odd}")
    config = EncodecCodecConfig(
        channels=hf.audio_channels,
        sample_rate=hf.sampling_rate,
        causal=hf.use_causal_conv,
        norm=hf.norm_type,
        normalize=hf.normalize,
        segment=None if hf.chunk_length_s is None else float(hf.chunk_length_s),
        overlap=0.01 if hf.overlap is None else float(hf.overlap),
        dimension=hf.hidden_size,
        n_filters=hf.num_filters,
        n_residual_layers=hf.num_residual_layers,
        ratios=tuple(hf.upsampling_ratios),
        lstm=hf.num_lstm_layers,
        n_q=hf.num_quantizers,
        bins=hf.codebook_size,
        target_bandwidths=tuple(float(b) for b in hf.target_bandwidths),
    )
    if hf.codebook_dim != hf.hidden_size:
        raise ValueError(f"encodec: codebook_dim {hf.codebook_dim} != hidden_size {hf.hidden_size}")
    return config
