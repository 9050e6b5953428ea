"""MuCodec as a codec plugin: its tokenizer, its separate decoder, its official files."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from audio_codecs.base import Codec, CodecSpec, RecordedCodec
from audio_codecs.mucodec import checkpoint, codec, decoding
from audio_codecs.plugin import CodecPlugin, DecoderOptions
from core.errors import UsageError
from mucodec.encoder.config import PRESETS


class MuCodecPlugin(CodecPlugin):
    """MuCodec: 25 tokens/s at 48 kHz; decodes with the flow-matching decoder the user names.

    Its token tables do not say which decoder to use (the decoder has weights of its own),
    so the spot-check's `--decoder-checkpoint`, `--official-mucodec` or `--decoder-config`
    names one (`decoding.DecoderSpec`); `--checkpoint mucodec=PATH` is not needed.
    """

    name = "mucodec"
    presets = tuple(PRESETS)
    tiny_preset = "tiny"
    full_size_preset = "official"

    def load(self, spec: CodecSpec, device: torch.device) -> Codec:
        """The tokenizer of `spec` (no decoder)."""
        return codec.load(spec, device)

    def decoding_codec(
        self,
        recorded: RecordedCodec,
        options: DecoderOptions,
        checkpoint: str | None,
        device: torch.device,
    ) -> Codec:
        """A decode-only codec around the decoder `options` name (`DecoderSpec`)."""
        return decoding.DecoderSpec(**options).codec(recorded, device)

    def check_decoding(
        self, recorded: RecordedCodec, options: DecoderOptions, checkpoint: str | None
    ) -> None:
        """Refuses tables with no decoder named (and settings `DecoderSpec` refuses)."""
        decoding.DecoderSpec(**options)

    def add_decoder_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The decoder's source, sampler and window options."""
        decoding.add_decoder_arguments(parser)

    def decoder_options(self, args: argparse.Namespace) -> DecoderOptions:
        """`DecoderSpec`'s fields from the arguments ({} when no decoder is named)."""
        return decoding.decoder_options(args)

    def decoder_inputs(self, options: DecoderOptions) -> dict[str, str]:
        """The decoder's checkpoint or official files."""
        flags = {
            "checkpoint": "--decoder-checkpoint",
            "official_mucodec": "--official-mucodec",
            "official_audioldm": "--official-audioldm",
        }
        return {flag: options[key] for key, flag in flags.items() if options.get(key)}

    def decoder_facts(self, options: DecoderOptions) -> dict[str, str]:
        """Which decoder, and its steps, guidance and precision."""
        return decoding.DecoderSpec(**options).facts() if options else {}

    def add_convert_arguments(self, parser: argparse.ArgumentParser) -> None:
        """`--mucodec` and `--muq`: the tokenizer's two official files."""
        parser.add_argument("--mucodec", help="MuCodec: official mucodec.pt (holds the RVQ)")
        parser.add_argument(
            "--muq", help="MuCodec: official muq.pt; optional when mucodec.pt carries muencoder.*"
        )

    def convert_sources(self, args: argparse.Namespace) -> dict[str, str]:
        """mucodec.pt, and muq.pt when given."""
        if args.mucodec is None:
            raise UsageError(f"--codec {self.name} needs --mucodec")
        sources = {"mucodec": args.mucodec}
        if args.muq is not None:
            sources["muq"] = args.muq
        return sources

    def convert_checkpoint(
        self, sources: Mapping[str, str], output: Path, preset: str | None
    ) -> dict[str, Any]:
        """The tokenizer's official files, verified, into our checkpoint directory."""
        return checkpoint.convert_official(sources, output, preset)


PLUGIN = MuCodecPlugin()
