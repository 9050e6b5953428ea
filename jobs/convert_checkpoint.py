"""Convert the official MuCodec encoder weights into our safetensors checkpoint.

Example:
    python -m jobs.convert_checkpoint --muq muq.pt --mucodec mucodec.pt --output ./mucodec-ckpt

Reads `muq.pt` (fairseq, read without executing any pickled code) and `mucodec.pt`,
verifies every key and shape against the official layout, keeps only what the configured
encoder layer needs, and writes OUTPUT/model.safetensors, OUTPUT/config.json (config,
sha256 of the weights, sha256 of the source files) and OUTPUT/model.safetensors.sha256.
The result loads with `MuCodecTokenizer.from_checkpoint(OUTPUT)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from jobs.cli import JobParser, main_entry
from mucodec.checkpoint_dir import CONFIG_FILE, sha256_file
from mucodec.encoder import checkpoint as ckpt
from mucodec.encoder.config import PRESETS, preset
from mucodec.encoder.tokenizer import MuCodecTokenizer
from mucodec.key_map import CheckpointError


def build_parser() -> JobParser:
    """The convert_checkpoint job's command line."""
    parser = JobParser("python -m jobs.convert_checkpoint", __doc__)
    parser.add_argument("--mucodec", required=True, help="official mucodec.pt (holds the RVQ)")
    parser.add_argument(
        "--muq", help="official muq.pt; optional when mucodec.pt carries muencoder.* weights"
    )
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument(
        "--preset",
        default="official",
        choices=sorted(PRESETS),
        help="tokenizer config of the weights (default: official)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    return parser


def convert(
    mucodec: str | Path,
    output: str | Path,
    *,
    muq: str | Path | None = None,
    preset_name: str = "official",
    force: bool = False,
) -> dict[str, Any]:
    """Loads the official files strictly and writes our checkpoint directory.

    Returns:
        A summary: output path, weights sha256, tensor count and the sources' sha256.

    Raises:
        FileExistsError: if the output already holds a checkpoint and not `force`.
        mucodec.key_map.CheckpointError: if the official files do not verify.
    """
    output = Path(output)
    if (output / CONFIG_FILE).exists() and not force:
        raise FileExistsError(f"{output} already holds a checkpoint; use --force to replace it")
    config = preset(preset_name)
    tokenizer = MuCodecTokenizer.from_checkpoint(
        muq=muq, mucodec=mucodec, config=config, hash_official=False
    )
    sources = {
        name: {"file": Path(path).name, "sha256": sha256_file(path)}
        for name, path in (("mucodec", mucodec), ("muq", muq))
        if path is not None
    }
    state = tokenizer.state_dict()
    digest = ckpt.save_converted(output, config, state, sources)
    return {"output": str(output), "sha256": digest, "tensors": len(state), "sources": sources}


def main(argv: list[str] | None = None) -> int:
    """Converts the official checkpoint files and prints what was written.

    Args:
        argv: The command line without the program name; None reads `sys.argv`.

    Returns:
        The exit status: 0 when the checkpoint was written.
    """
    args = build_parser().parse_args(argv)
    try:
        summary = convert(
            args.mucodec, args.output, muq=args.muq, preset_name=args.preset, force=args.force
        )
    except (FileExistsError, FileNotFoundError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    main_entry(main)
