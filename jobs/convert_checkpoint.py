"""Convert a codec's official weights into our safetensors checkpoint directory.

Examples:
    python -m jobs.convert_checkpoint --muq muq.pt --mucodec mucodec.pt --output ./mucodec-ckpt
    python -m jobs.convert_checkpoint --codec dac --source weights.pth --output ./dac-ckpt
    python -m jobs.convert_checkpoint --codec encodec --source encodec_48khz-7e698e3e.th \\
        --preset 48khz --output ./encodec-ckpt

Each codec names its official files (MuCodec: --mucodec, and --muq unless mucodec.pt
carries the encoder; the others: --source). Every file is read without executing pickled
code and mapped through one explicit key map, strictly; the result is OUTPUT/model.safetensors,
OUTPUT/config.json (config, sha256 of the weights and of the sources) and a sha256 file. It
loads with `--checkpoint [CODEC=]OUTPUT` in jobs.tokenize and jobs.spotcheck. Each codec's
docs say which files it takes (docs/tokenizer.md, docs/dac.md, docs/encodec.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from audio_codecs import registry
from core.checkpoint_dir import CONFIG_FILE
from core.errors import OutputInUse
from jobs.cli import JobParser, main_entry


def build_parser() -> JobParser:
    """The convert_checkpoint job's command line: its own flags and every codec's."""
    parser = JobParser("python -m jobs.convert_checkpoint", __doc__)
    parser.add_argument(
        "--codec",
        default=registry.DEFAULT_CODEC,
        choices=registry.codecs(),
        help=f"whose weights (default: {registry.DEFAULT_CODEC})",
    )
    parser.add_argument("--source", help="the official file of a codec that takes one")
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument(
        "--preset",
        help="the weights' model, for codecs whose files do not say it: "
        + "; ".join(
            f"{name} {', '.join(registry.plugin(name).presets)}" for name in registry.codecs()
        ),
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    for name in registry.codecs():
        registry.plugin(name).add_convert_arguments(parser)
    return parser


def convert(args) -> dict[str, Any]:
    """Converts the official files the arguments name with their codec's plugin.

    Raises:
        UsageError: a file the codec needs is missing, or its preset is.
        OutputInUse: the output already holds a checkpoint and not --force.
        CheckpointError: the files do not verify.
    """
    plugin = registry.plugin(args.codec)
    sources = plugin.convert_sources(args)
    output = Path(args.output)
    if (output / CONFIG_FILE).exists() and not args.force:
        raise OutputInUse(f"{output} already holds a checkpoint; use --force to replace it")
    return plugin.convert_checkpoint(sources, output, args.preset)


def main(argv: list[str] | None = None) -> int:
    """Converts the official checkpoint files and prints what was written.

    Args:
        argv: The command line without the program name; None reads `sys.argv`.

    Returns:
        The exit status: 0 when the checkpoint was written.
    """
    args = build_parser().parse_args(argv)
    json.dump(convert(args), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    main_entry(main)
