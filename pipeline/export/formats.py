"""The export seam: one module per format behind `ExportFormat`, named by one registry line.

A format writes one part's samples into a directory of its own files (the stage moves them
into the output and marks the part done), then, once every part is done, whatever joins
them (`finish`). Its library is imported only when the format is used, and a missing one
is a usage error naming the package extra to install, before any work.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from core.errors import InvalidSetting, UsageError
from pipeline.export.samples import ExportSample


class ExportFormat(Protocol):
    """What the export stage needs of a format.

    Attributes:
        name: The `--format` value.
        library: The module it needs (`importlib.util.find_spec` name).
        extra: The package extra that installs it (`pip install mucodec-pipeline[extra]`).
        carries_audio: Whether it can carry the segments' audio (`--audio`).
    """

    name: str
    library: str
    extra: str
    carries_audio: bool

    def write_part(
        self,
        samples: Iterable[ExportSample],
        directory: Path,
        index: int,
        codecs: dict[str, Any],
        audio: bool,
    ) -> int:
        """Write part `index`'s samples as files under `directory` (paths as they will be
        under the output); returns how many.

        `codecs` maps each codec to its provenance (the token table's `codec` metadata);
        with `audio`, every sample has its `flac`.
        """
        ...

    def finish(self, output: Path, parts: list[int], codecs: dict[str, Any]) -> None:
        """Join the written parts into the format's final layout under `output`."""
        ...


FORMATS: dict[str, str] = {
    "lhotse-shar": "pipeline.export.lhotse_shar",
    "hf-datasets": "pipeline.export.hf_datasets",
}


def export_format(name: str) -> ExportFormat:
    """The format `name`, its library checked.

    Raises:
        InvalidSetting: an unknown format.
        UsageError: its library is not installed (the message names the extra).
    """
    if name not in FORMATS:
        raise InvalidSetting(f"unknown export format {name!r}; known: {', '.join(FORMATS)}")
    module = importlib.import_module(FORMATS[name])
    chosen: ExportFormat = module.FORMAT
    if importlib.util.find_spec(chosen.library) is None:
        raise UsageError(
            f"--format {name} needs the {chosen.library!r} package: "
            f"pip install 'mucodec-pipeline[{chosen.extra}]'"
        )
    return chosen
