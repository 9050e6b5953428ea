"""Convert official codec weights into our safetensors checkpoint directory.

Examples:
    python -m jobs.convert_checkpoint --muq muq.pt --mucodec mucodec.pt --output ./mucodec-ckpt
    python -m jobs.convert_checkpoint --codec dac --source weights.pth --output ./dac-ckpt
    python -m jobs.convert_checkpoint --codec encodec --source encodec_48khz-7e698e3e.th \
        --preset 48khz --output ./encodec-ckpt

MuCodec (the default): reads `muq.pt` (fairseq) and `mucodec.pt`, verifies every key and
shape against the official layout, keeps only what the configured encoder layer needs.
DAC: the official `.pth` with its metadata kwargs. EnCodec: the official `.th` state dict of
the `--preset` model (24khz or 48khz). Every file is read without executing pickled code and
mapped through one explicit key map, strictly; the result is OUTPUT/model.safetensors,
OUTPUT/config.json (config, sha256 of the weights and of the sources) and a sha256 file. It
loads with `--checkpoint [CODEC=]OUTPUT` in jobs.tokenize and jobs.spotcheck.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from audio_codecs.dac.weights import convert_official as convert_official_dac
from audio_codecs.encodec.checkpoint import convert_official as convert_official_encodec
from audio_codecs.registry import CODECS, codec_presets
from core.checkpoint_dir import CONFIG_FILE, sha256_file
from core.key_map import CheckpointError
from jobs.cli import JobParser, UsageError, main_entry
from mucodec.encoder import checkpoint as ckpt
from mucodec.encoder.config import PRESETS, preset
from mucodec.encoder.tokenizer import MuCodecTokenizer

ENCODEC_PRESETS = codec_presets("encodec")  # 24khz and 48khz are the released models.


def build_parser() -> JobParser:
    """The convert_checkpoint job's command line."""
    parser = JobParser("python -m jobs.convert_checkpoint", __doc__)
    parser.add_argument(
        "--codec", default="mucodec", choices=CODECS, help="whose weights (default: mucodec)"
    )
    parser.add_argument("--mucodec", help="MuCodec: official mucodec.pt (holds the RVQ)")
    parser.add_argument(
        "--muq", help="MuCodec: official muq.pt; optional when mucodec.pt carries muencoder.*"
    )
    parser.add_argument("--source", help="DAC: the official .pth; EnCodec: the official .th")
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument(
        "--preset",
        help=f"the weights' model: MuCodec {', '.join(sorted(PRESETS))} (default official); "
        f"EnCodec {', '.join(ENCODEC_PRESETS)} (required); DAC reads it from the file",
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
        core.key_map.CheckpointError: if the official files do not verify.
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
        summary = _convert_codec(args)
    except (FileExistsError, FileNotFoundError, CheckpointError, UsageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


def _convert_codec(args) -> dict[str, Any]:
    """Runs the conversion `args.codec` asks for, after checking its flags."""
    needs = {"mucodec": "--mucodec", "dac": "--source", "encodec": "--source"}[args.codec]
    if getattr(args, needs.lstrip("-")) is None:
        raise UsageError(f"--codec {args.codec} needs {needs}")
    if args.codec == "mucodec":
        return convert(
            args.mucodec,
            args.output,
            muq=args.muq,
            preset_name=args.preset or "official",
            force=args.force,
        )
    output = Path(args.output)
    if (output / CONFIG_FILE).exists() and not args.force:
        raise FileExistsError(f"{output} already holds a checkpoint; use --force to replace it")
    if args.codec == "dac":
        return convert_official_dac(args.source, output)
    if args.preset not in ENCODEC_PRESETS:
        raise UsageError(f"--codec encodec needs --preset, one of {', '.join(ENCODEC_PRESETS)}")
    return convert_official_encodec(args.source, output, args.preset)


if __name__ == "__main__":
    main_entry(main)
