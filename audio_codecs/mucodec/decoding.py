"""MuCodec's decoder for the spot-check: which one, how to sample, and its command line.

MuCodec's tokens decode with a model the tokenizer does not carry: the flow-matching DiT,
the Mel-VAE and HiFi-GAN, from our converted checkpoint, the official files or a preset
with random weights. `DecoderSpec` says which and how to sample; it travels as plain values
(the spot-check's claim and its actors) and builds a decode-only `MuCodecCodec`.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

import torch

from audio_codecs.base import RecordedCodec
from audio_codecs.mucodec.codec import MuCodecCodec, codec_info
from core.errors import InvalidSetting, UsageError
from mucodec.decoder.builders import build_decoder
from mucodec.decoder.checkpoint import load_decoder, load_official_decoder
from mucodec.decoder.config import (
    DECODER_PRESETS,
    WindowConfig,
    decoder_preset,
    with_codebooks,
)
from mucodec.decoder.model import MuCodecDecoder
from mucodec.encoder.config import TokenizerConfig

PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class DecoderSpec:
    """Which decoder: our converted checkpoint, the official files, or a random preset.

    Attributes:
        checkpoint, official_mucodec, official_audioldm, preset: The decoder's source:
            exactly one of a checkpoint, the official pair, a preset.
        seed: Weights of a random preset.
        steps, guidance: Euler steps and classifier-free guidance of the sampler.
        precision: Autocast dtype of the flow model and the VAE on a GPU.
        noise_seed: The sampler's starting noise: the same seed gives the same audio.
        window_codes: The decoder window in codes; None: the decoder's own (1024, 40.96 s).
    """

    checkpoint: str | None = None
    official_mucodec: str | None = None
    official_audioldm: str | None = None
    preset: str | None = None
    seed: int = 0
    steps: int = 50
    guidance: float = 1.5
    precision: str = "float32"
    noise_seed: int = 0
    window_codes: int | None = None

    def __post_init__(self) -> None:
        """Refuses specs that name no decoder, several, half of the official pair, or a
        window that cannot be cut."""
        sources = [self.checkpoint, self.official_mucodec, self.preset]
        if sum(s is not None for s in sources) != 1:
            raise InvalidSetting(
                "MuCodec's tokens need a decoder: give exactly one of --decoder-checkpoint, "
                "--official-mucodec (with --official-audioldm) or --decoder-config"
            )
        if (self.official_mucodec is None) != (self.official_audioldm is None):
            raise InvalidSetting("official decoding needs both mucodec.pt and audioldm_48k.pth")
        if self.window_codes is not None:
            try:
                WindowConfig.of_length(self.window_codes)
            except ValueError as error:
                raise InvalidSetting(str(error)) from None

    def load(self, tokenizer_config: TokenizerConfig, device: torch.device) -> MuCodecDecoder:
        """The decoder, in eval mode; a random preset is shaped to the tokens' codebooks.

        Raises:
            InvalidSetting: the decoder has fewer codes than the tokens, or the window's
                overlap is no whole number of latent frames.
        """
        quantizer = tokenizer_config.quantizer
        if self.checkpoint:
            decoder = load_decoder(self.checkpoint, device=device, precision=self.precision)
        elif self.official_mucodec:
            decoder = load_official_decoder(
                self.official_mucodec, self.official_audioldm, device=device,
                precision=self.precision,
            )  # fmt: skip
        else:
            config = with_codebooks(
                decoder_preset(self.preset), quantizer.n_codebooks, quantizer.codebook_size
            )
            decoder = build_decoder(config, seed=self.seed, device=device, precision=self.precision)
        if (decoder.num_codebooks, decoder.codebook_size) < (
            quantizer.n_codebooks,
            quantizer.codebook_size,
        ):
            raise InvalidSetting(
                f"decoder has {decoder.num_codebooks} x {decoder.codebook_size} codes; the "
                f"tokens need {quantizer.n_codebooks} x {quantizer.codebook_size}"
            )
        if self.window_codes is not None:
            token_rate = decoder.config.window.token_rate
            try:
                decoder.use_window(WindowConfig.of_length(self.window_codes, token_rate))
            except ValueError as error:  # Its overlap is no whole number of latent frames.
                raise InvalidSetting(f"--decoder-window {self.window_codes}: {error}") from None
        return decoder.eval()

    def codec(self, recorded: RecordedCodec, device: torch.device) -> MuCodecCodec:
        """A decode-only MuCodec codec for the codes `recorded` describes."""
        config = TokenizerConfig.from_json(recorded.config)
        model = self.load(config, device)
        sampling = model.with_sampling(num_steps=self.steps, guidance_scale=self.guidance)
        info = codec_info(config, recorded.preset, recorded.weights_sha256)
        threshold = config.frontend.song_peak_threshold
        return MuCodecCodec(
            info, threshold, decoder=model, decode_seed=self.noise_seed, sampling=sampling
        )

    def facts(self) -> dict[str, str]:
        """The decoder as the spot-check report's header shows it."""
        source = self.checkpoint or self.official_mucodec
        return {
            "MuCodec decoder": source or f"preset {self.preset} (random weights, seed {self.seed})",
            "steps / guidance / dtype": f"{self.steps} / {self.guidance} / {self.precision}",
        }


def add_decoder_arguments(parser: argparse.ArgumentParser) -> None:
    """MuCodec's decoder options on the spot-check's command line."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--decoder-checkpoint", help="MuCodec: our converted decoder checkpoint (a directory)"
    )
    source.add_argument(
        "--official-mucodec",
        help="MuCodec: official mucodec.pt (with --official-audioldm), as released by the "
        "official MuCodec repository",
    )
    source.add_argument(
        "--decoder-config",
        choices=sorted(DECODER_PRESETS),
        help="MuCodec: a decoder preset with seeded random weights, for tests and the demo "
        f"({', '.join(sorted(DECODER_PRESETS))})",
    )
    parser.add_argument("--official-audioldm", help="MuCodec: official audioldm_48k.pth")
    parser.add_argument(
        "--steps", type=int, default=50, help="MuCodec: flow-matching Euler steps (default: 50)"
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=1.5,
        help="MuCodec: classifier-free guidance scale (default: 1.5)",
    )
    parser.add_argument(
        "--decoder-precision",
        choices=PRECISIONS,
        help="MuCodec: precision of the flow-matching model and the VAE on GPU; the vocoder "
        "always runs in float32 (default: float32)",
    )
    parser.add_argument(
        "--noise-seed",
        type=int,
        default=0,
        help="MuCodec: seed of the decoder's initial noise: the same seed gives the same "
        "audio (default: 0)",
    )
    parser.add_argument(
        "--decoder-window",
        type=int,
        metavar="CODES",
        help="MuCodec: decoder window in codes, a multiple of 4 (a quarter overlaps the next "
        "window): the decoder renders whole windows, so a short window decodes short "
        "segments faster, as on a CPU; it is still the real decoder, and its audio differs "
        "(default: the model's, 1024 codes = 40.96 s)",
    )


def decoder_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `DecoderSpec` fields the arguments give, as plain values; {} when no decoder
    source is named (the spot-check then refuses MuCodec tables it cannot decode).

    Raises:
        UsageError: half of the official pair, or settings out of range.
    """
    if args.official_audioldm and not args.official_mucodec:
        raise UsageError("--official-audioldm needs --official-mucodec")
    if args.official_mucodec and not args.official_audioldm:
        raise UsageError("--official-mucodec needs --official-audioldm")
    if args.steps < 1 or args.guidance < 0 or (args.decoder_window or 1) < 1:
        raise UsageError("--steps and --decoder-window must be at least 1, --guidance 0 or more")
    if not (args.decoder_checkpoint or args.official_mucodec or args.decoder_config):
        return {}
    spec = DecoderSpec(
        checkpoint=args.decoder_checkpoint,
        official_mucodec=args.official_mucodec,
        official_audioldm=args.official_audioldm,
        preset=args.decoder_config,
        steps=args.steps,
        guidance=args.guidance,
        precision=args.decoder_precision or "float32",
        noise_seed=args.noise_seed,
        window_codes=args.decoder_window,
    )
    return asdict(spec)
