"""MuCodec behind the codec interface: the tokenizer encodes, an optional decoder decodes.

MuCodec's encoder and decoder are separate models with separate checkpoints (the decoder is
a flow-matching sampler with its own settings), so the codec is built from the tokenizer,
and the spot-check builds a decode-only codec around a decoder (`decoding.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from audio_codecs.base import (
    PIPELINE_SAMPLE_RATE,
    Codec,
    CodecInfo,
    CodecSpec,
    EncodedSegment,
    random_weights,
)
from mucodec.decoder.config import SamplingConfig
from mucodec.decoder.model import MuCodecDecoder
from mucodec.encoder.config import TokenizerConfig
from mucodec.encoder.config import preset as tokenizer_preset
from mucodec.encoder.frontend import song_peak_divisor
from mucodec.encoder.tokenizer import MuCodecTokenizer


class MuCodecCodec(Codec):
    """MuCodec: joint stereo at 48 kHz, one code stream, the official song-level normalisation.

    Args:
        info: Its provenance (`codec_info`).
        song_peak_threshold: The song peak above which the official script normalises.
        tokenizer: The encoder side, on its device, in eval mode; None for a codec that only
            decodes (the spot-check decodes tables whose encoder it need not load).
        decoder: The decoder side, or None for a codec that only encodes.
        decode_seed: Noise seed of the flow-matching sampler for every decoded segment.
        sampling: Steps, guidance and execution mode of the sampler (default: the
            decoder config's).
    """

    def __init__(
        self,
        info: CodecInfo,
        song_peak_threshold: float,
        tokenizer: MuCodecTokenizer | None = None,
        decoder: MuCodecDecoder | None = None,
        decode_seed: int = 0,
        sampling: SamplingConfig | None = None,
    ) -> None:
        if tokenizer is None and decoder is None:
            raise ValueError("a MuCodec codec needs a tokenizer, a decoder or both")
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.decode_seed = decode_seed
        self.song_peak_threshold = song_peak_threshold
        self._sampling = sampling or (decoder.config.sampling if decoder else None)
        self._info = info

    @property
    def info(self) -> CodecInfo:
        """Provenance; `channels` is 1 (MuCodec codes stereo jointly)."""
        return self._info

    @property
    def device(self) -> torch.device:
        """Where the model runs (the tokenizer's, else the decoder's)."""
        model = self.tokenizer if self.tokenizer is not None else self.decoder
        return next(model.parameters()).device

    @property
    def sampling(self) -> tuple[int, float]:
        """The decoder's (steps, guidance scale); (0, 0.0) without a decoder."""
        if self._sampling is None:
            return 0, 0.0
        return self._sampling.num_steps, self._sampling.guidance_scale

    def encode_audio(
        self, segments: Sequence[Tensor], *, song_peaks: Sequence[float] | None = None
    ) -> list[EncodedSegment]:
        """Codes `[K, L // 1920]` per segment, exactly `MuCodecTokenizer.encode_segments`.

        Raises:
            ValueError: if the codec was built without a tokenizer (decode only).
        """
        if self.tokenizer is None:
            raise ValueError("this MuCodec codec decodes only: it has no tokenizer")
        codes = self.tokenizer.encode_segments(segments, song_peaks=song_peaks)
        return [EncodedSegment(c.cpu().numpy().astype(np.uint16)) for c in codes]

    def decode(self, encoded: Sequence[EncodedSegment]) -> list[Tensor]:
        """48 kHz stereo per segment, 1920 samples per frame, one batch per code length.

        Raises:
            ValueError: if the codec was built without a decoder.
        """
        if self.decoder is None:
            raise ValueError("this MuCodec codec has no decoder")
        outputs: list[Tensor | None] = [None] * len(encoded)
        for n_frames in sorted({e.codes.shape[-1] for e in encoded}):
            group = [i for i, e in enumerate(encoded) if e.codes.shape[-1] == n_frames]
            codes = torch.from_numpy(np.stack([encoded[i].codes.astype(np.int64) for i in group]))
            audio = self.decoder.decode(
                codes.to(self.device), seeds=self.decode_seed, sampling=self._sampling
            )
            audio = audio.float().cpu()
            for row, index in enumerate(group):
                outputs[index] = audio[row]
        return [o for o in outputs if o is not None]

    def as_seen(self, segment: Tensor, song_peak: float) -> Tensor:
        """`segment` after the official song-level normalisation, as the tokenizer saw it."""
        return segment / float(song_peak_divisor(song_peak, self.song_peak_threshold))


def codec_info(config: TokenizerConfig, preset: str, weights_sha256: str) -> CodecInfo:
    """The provenance of codes of a tokenizer of `config` (`preset` "" for a checkpoint's)."""
    return CodecInfo(
        codec="mucodec",
        preset=preset,
        config=config.to_json(),
        weights_sha256=weights_sha256,
        sample_rate=PIPELINE_SAMPLE_RATE,
        frame_rate=float(config.frontend.token_rate),
        channels=1,
        num_codebooks=config.quantizer.n_codebooks,
        codebook_size=config.quantizer.codebook_size,
        encoder_layer=config.encoder.output_layer,
    )


def load(spec: CodecSpec, device: torch.device) -> MuCodecCodec:
    """Builds the MuCodec tokenizer of `spec` on `device`, in eval mode, with no decoder.

    Args:
        spec: A preset of the tokenizer's (seeded random weights) or a converted checkpoint.
        device: Where the model runs.

    Returns:
        The codec.
    """
    if spec.checkpoint is not None:
        tokenizer = MuCodecTokenizer.from_checkpoint(spec.checkpoint, precision=spec.precision)
    else:
        tokenizer = MuCodecTokenizer.from_config(
            tokenizer_preset(spec.preset), seed=spec.seed, precision=spec.precision
        )
    tokenizer = tokenizer.to(device).eval()
    weights = tokenizer.checkpoint_sha256 or random_weights(spec.seed)
    info = codec_info(tokenizer.config, spec.preset or "", weights)
    threshold = tokenizer.config.frontend.song_peak_threshold
    return MuCodecCodec(info, threshold, tokenizer=tokenizer)
