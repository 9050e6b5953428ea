"""MuCodec behind the codec interface: the tokenizer encodes, an optional decoder decodes.

MuCodec's encoder and decoder are separate models with separate checkpoints (the decoder is
a flow-matching sampler with its own settings), so the codec is built from the tokenizer,
and the spot-check attaches a decoder when it needs one (`with_decoder`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from audio_codecs.base import PIPELINE_SAMPLE_RATE, Codec, CodecInfo, CodecSpec, EncodedSegment
from mucodec.decoder.config import SamplingConfig
from mucodec.decoder.model import MuCodecDecoder
from mucodec.encoder.config import PRESETS as TOKENIZER_PRESETS
from mucodec.encoder.config import preset as tokenizer_preset
from mucodec.encoder.tokenizer import MuCodecTokenizer

PRESETS = tuple(TOKENIZER_PRESETS)


class MuCodecCodec(Codec):
    """MuCodec: joint stereo at 48 kHz, one code stream, the official song-level normalisation.

    Args:
        tokenizer: The encoder side, on its device, in eval mode; None for a codec that only
            decodes (the spot-check decodes tables whose encoder it need not load).
        info: Its provenance (see `load`).
        decoder: The decoder side, or None for a codec that only encodes.
        decode_seed: Noise seed of the flow-matching sampler for every decoded segment.
        sampling: Steps, guidance and execution mode of the sampler (default: the
            decoder config's).
    """

    def __init__(
        self,
        tokenizer: MuCodecTokenizer | None,
        info: CodecInfo,
        decoder: MuCodecDecoder | None = None,
        decode_seed: int = 0,
        sampling: SamplingConfig | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.decode_seed = decode_seed
        self.sampling = sampling
        self._info = info

    @property
    def info(self) -> CodecInfo:
        """Provenance; `channels` is 1 (MuCodec codes stereo jointly)."""
        return self._info

    def with_decoder(
        self,
        decoder: MuCodecDecoder,
        decode_seed: int = 0,
        sampling: SamplingConfig | None = None,
    ) -> MuCodecCodec:
        """This codec with `decoder` attached for `decode` (sampling as in `__init__`)."""
        return MuCodecCodec(self.tokenizer, self._info, decoder, decode_seed, sampling)

    def encode(
        self,
        segments: Sequence[Tensor],
        *,
        song_peaks: Sequence[float] | None = None,
        gains: Sequence[float] | None = None,
    ) -> list[EncodedSegment]:
        """Codes `[K, L // 1920]` per segment, exactly `MuCodecTokenizer.encode_segments`.

        Raises:
            ValueError: if the codec was built without a tokenizer (decode only).
        """
        if self.tokenizer is None:
            raise ValueError("this MuCodec codec decodes only: it has no tokenizer")
        codes = self.tokenizer.encode_segments(segments, song_peaks=song_peaks, gains=gains)
        return [EncodedSegment(c.cpu().numpy().astype(np.uint16)) for c in codes]

    def decode(self, encoded: Sequence[EncodedSegment]) -> list[Tensor]:
        """48 kHz stereo per segment, 1920 samples per frame, one batch per code length.

        Raises:
            ValueError: if no decoder is attached.
        """
        if self.decoder is None:
            raise ValueError("this MuCodec codec has no decoder attached (with_decoder)")
        device = next(self.decoder.parameters()).device
        outputs: list[Tensor | None] = [None] * len(encoded)
        for n_frames in sorted({e.codes.shape[-1] for e in encoded}):
            group = [i for i, e in enumerate(encoded) if e.codes.shape[-1] == n_frames]
            codes = torch.from_numpy(np.stack([encoded[i].codes.astype(np.int64) for i in group]))
            audio = self.decoder.decode(
                codes.to(device), seeds=self.decode_seed, sampling=self.sampling
            )
            audio = audio.float().cpu()
            for row, index in enumerate(group):
                outputs[index] = audio[row]
        return [o for o in outputs if o is not None]


def codec_info(tokenizer: MuCodecTokenizer, preset: str, seed: int) -> CodecInfo:
    """The provenance of `tokenizer` (from `preset`, or a checkpoint when preset is "")."""
    config = tokenizer.config
    return CodecInfo(
        codec="mucodec",
        preset=preset,
        config=config.to_json(),
        weights_sha256=tokenizer.checkpoint_sha256 or f"random-weights-seed-{seed}",
        sample_rate=PIPELINE_SAMPLE_RATE,
        frame_rate=float(tokenizer.frame_rate),
        channels=1,
        num_codebooks=tokenizer.num_codebooks,
        codebook_size=tokenizer.codebook_size,
    )


def load(spec: CodecSpec, device: torch.device) -> MuCodecCodec:
    """Builds the MuCodec tokenizer of `spec` on `device`, in eval mode, with no decoder.

    Args:
        spec: A preset of `PRESETS` (seeded random weights) or a converted checkpoint.
        device: Where the model runs.

    Returns:
        The codec; attach a decoder with `with_decoder` to decode.
    """
    if spec.checkpoint is not None:
        tokenizer = MuCodecTokenizer.from_checkpoint(spec.checkpoint, precision=spec.precision)
    else:
        tokenizer = MuCodecTokenizer.from_config(
            tokenizer_preset(spec.preset), seed=spec.seed, precision=spec.precision
        )
    tokenizer = tokenizer.to(device).eval()
    return MuCodecCodec(tokenizer, codec_info(tokenizer, spec.preset or "", spec.seed))
