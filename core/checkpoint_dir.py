"""Our checkpoint directory format, shared by the tokenizer and the decoder.

A directory holds `model.safetensors` (our state dict), `config.json` (format tag and
version, the model config, the weights' sha256 and their provenance) and
`model.safetensors.sha256` (`sha256sum -c` compatible). The weights go to a temporary name
and are renamed, and `config.json` is written last, so a crash never leaves a directory
that loads. Readers refuse other formats, unknown versions and weights whose hash changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from core.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    """Hex sha256 of a file, read in chunks (constant memory for multi-GB checkpoints).

    Args:
        path: The file.
        chunk: Bytes read at a time (16 MiB).

    Returns:
        The 64-character lowercase hex digest.
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_checkpoint_dir(
    directory: str | Path,
    format_name: str,
    format_version: int,
    config: Mapping[str, Any],
    state: Mapping[str, Tensor],
    sources: Mapping[str, Any] | None = None,
) -> str:
    """Writes weights, header and checksum, crash-safely (header last).

    Args:
        directory: Output directory (created).
        format_name: Format tag readers check, e.g. "mucodec-encoder".
        format_version: Version readers check.
        config: The model config as a JSON-ready dict.
        state: Our state dict (moved to CPU, made contiguous).
        sources: Provenance to record, e.g. official file names and their sha256.

    Returns:
        The sha256 of the weights file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    staged = directory / f"{WEIGHTS_FILE}.tmp"
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    save_file(
        tensors, str(staged), metadata={"format": format_name, "version": str(format_version)}
    )
    staged.replace(weights)
    digest = sha256_file(weights)
    header = {
        "format": format_name,
        "format_version": format_version,
        "weights": WEIGHTS_FILE,
        "sha256": digest,
        "sources": dict(sources or {}),
        "config": dict(config),
    }
    (directory / f"{WEIGHTS_FILE}.sha256").write_text(f"{digest}  {WEIGHTS_FILE}\n")
    (directory / CONFIG_FILE).write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
    return digest


def read_checkpoint_dir(
    directory: str | Path,
    format_name: str,
    format_version: int,
    verify_sha256: bool = True,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Reads a directory written by `write_checkpoint_dir`, refusing any mismatch.

    Args:
        directory: The checkpoint directory.
        format_name: The format tag expected in `config.json`.
        format_version: The only version this code reads.
        verify_sha256: Hash the weights and compare with the recorded sha256.

    Returns:
        (header dict from `config.json`, state dict).

    Raises:
        CheckpointError: if there is no `config.json`, the format or version differs, or
            the weights' sha256 is not the recorded one.
    """
    directory = Path(directory)
    header_path = directory / CONFIG_FILE
    if not header_path.is_file():
        raise CheckpointError(f"{directory}: no {CONFIG_FILE}; not a converted checkpoint")
    header = json.loads(header_path.read_text())
    if header.get("format") != format_name:
        raise CheckpointError(
            f"{header_path}: format {header.get('format')!r} is not {format_name!r}"
        )
    if header.get("format_version") != format_version:
        raise CheckpointError(
            f"{header_path}: format_version {header.get('format_version')!r} is not supported "
            f"(this code reads {format_version})"
        )
    weights = directory / header["weights"]
    if verify_sha256:
        actual = sha256_file(weights)
        if actual != header["sha256"]:
            raise CheckpointError(
                f"{weights}: sha256 differs from the recorded one ({actual} != {header['sha256']})"
            )
    return header, load_file(weights)
