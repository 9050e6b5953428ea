"""What a codec folder gives the pipeline: one `CodecPlugin`, named by one registry line.

The stages and jobs reach every codec through this and `audio_codecs.base`, never through a
codec's own modules: building its model from a spec, rebuilding a model that decodes the
codes a token table records, its decoder's settings on the spot-check's command line,
converting its official weights, and its presets. Adding a codec is one folder under
`audio_codecs/` whose package exports `PLUGIN`, plus its line in `audio_codecs.registry`
(docs/adding-a-codec.md).
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audio_codecs.base import Codec, CodecSpec, RecordedCodec
from core.errors import InvalidSetting, UsageError

if TYPE_CHECKING:  # Only for annotations: listing codecs needs no torch.
    import torch

DecoderOptions = Mapping[str, Any]
"""A codec's decoder settings for the spot-check: plain JSON values, in its claim."""


class CodecPlugin(ABC):
    """One codec, as the pipeline sees it.

    Attributes:
        name: The codec's registry name; its token tables go to `<tokens>/<name>/`.
        presets: Preset names, each a config built with seeded random weights (tests, demo).
        tiny_preset: The smallest preset: tests, the demo, quick figures.
        full_size_preset: The preset of the released model's size (speed figures).
    """

    name: str
    presets: tuple[str, ...]
    tiny_preset: str
    full_size_preset: str

    @abstractmethod
    def load(self, spec: CodecSpec, device: torch.device) -> Codec:
        """Builds the codec `spec` describes on `device`, in eval mode.

        Raises:
            CheckpointError: for a checkpoint that does not fit the model exactly.
            InvalidSetting: for an option this codec does not take.
        """

    def decoding_codec(
        self,
        recorded: RecordedCodec,
        options: DecoderOptions,
        checkpoint: str | None,
        device: torch.device,
    ) -> Codec:
        """A codec that decodes the codes `recorded` describes, on `device`.

        By default the model that made them, rebuilt: the `checkpoint` the user names for
        it, or its preset with the seed of its random weights.

        Raises:
            InvalidSetting: the named checkpoint is not the one the codes were made with, or
                the codes came from a checkpoint and none is named.
        """
        codec = self.load(recorded.rebuilt(checkpoint), device)
        if codec.info.weights_sha256 != recorded.weights_sha256:
            raise InvalidSetting(
                f"--checkpoint {self.name}={checkpoint} has weights "
                f"{codec.info.weights_sha256[:12]}..., the tokens were made with "
                f"{recorded.weights_sha256[:12]}..."
            )
        return codec

    def check_decoding(
        self, recorded: RecordedCodec, options: DecoderOptions, checkpoint: str | None
    ) -> None:
        """Refuses, before any work, settings that cannot decode the codes `recorded`
        describes (the checks of `decoding_codec` that need no model).

        Raises:
            InvalidSetting: as `decoding_codec` would.
        """
        recorded.rebuilt(checkpoint)

    def add_decoder_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027
        """Adds this codec's decoder options to the spot-check's command line (none here)."""

    def decoder_options(self, args: argparse.Namespace) -> DecoderOptions:
        """This codec's decoder settings from parsed arguments.

        Raises:
            UsageError: for a combination of its options that cannot work.
        """
        return {}

    def decoder_inputs(self, options: DecoderOptions) -> dict[str, str]:
        """Files its decoder settings name (option flag -> path), checked before Ray starts."""
        return {}

    def decoder_facts(self, options: DecoderOptions) -> dict[str, str]:
        """Lines about its decoder for the top of the spot-check report (none here)."""
        return {}

    def add_convert_arguments(self, parser: argparse.ArgumentParser) -> None:  # noqa: B027
        """Adds the flags of this codec's own source files to `jobs.convert_checkpoint`
        (none here: the job's generic `--source` names its one file)."""

    def convert_sources(self, args: argparse.Namespace) -> dict[str, str]:
        """The official files to convert (role -> path): by default `--source` alone.

        Raises:
            UsageError: when a file it needs is not given.
        """
        if args.source is None:
            raise UsageError(f"--codec {self.name} needs --source")
        return {"source": args.source}

    @abstractmethod
    def convert_checkpoint(
        self, sources: Mapping[str, str], output: Path, preset: str | None
    ) -> dict[str, Any]:
        """Converts official weights into our checkpoint directory `output`.

        Args:
            sources: Role -> the official file (`convert_sources`).
            output: The directory to write (the job refuses one that holds a checkpoint).
            preset: The model the weights are of, for codecs whose files do not say.

        Returns:
            A summary: output, weights sha256, tensors, the sources' sha256.

        Raises:
            UsageError: when the preset is needed and missing or unknown.
            CheckpointError: when the files do not verify against the model.
        """
