"""The export stage: token tables -> a loader's format, one unit per token part.

Part n of every codec's table (the same shards) is read side by side (`samples`), written
by the format into a staging directory, moved into the output file by file, and marked done
(`_export/parts/<n>.json`). A rerun skips marked parts and redoes the rest from scratch, so
a killed export reruns to the same contents; when every part is done the format joins them
(`finish`; not again on a rerun that finds everything done) and `summary.json` is written.
Memory stays at a few rows per codec (`samples.ROWS_PER_READ`) and what the format buffers.
The output is a local directory (the loaders' writers need one).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.config import JsonConfig
from core.errors import InvalidSetting, MissingInput
from pipeline.claims import claim_output
from pipeline.export.audio import ShardAudio
from pipeline.export.formats import export_format
from pipeline.export.samples import JoinCounts, part_samples, provenance
from pipeline.io import StorageOptions, filesystem, marker_name, read_json, write_json
from pipeline.tokenize.dataset import codec_tokens_url
from pipeline.tokenize.parts import token_files

RUN_FILE = "_export/run.json"
PARTS_DIR = "_export/parts"
STAGING_DIR = "_export/staging"


@dataclass
class ExportSummary(JsonConfig):
    """What an export did; also written to `<output>/_export/summary.json`."""

    format: str
    codecs: list[str]
    parts: int
    parts_run: int
    parts_already_done: int
    samples: int
    left_out: int  # Segments some codec lacks (it rejected them): not exported.
    wall_seconds: float


def export_tokens(
    tokens: dict[str, str],
    output: str,
    format_name: str,
    *,
    audio: str | None = None,
    storage: StorageOptions | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExportSummary:
    """Export the token tables `tokens` (codec -> a tokenize output or its codec's tokens
    dir) to `output` in `format_name`, resuming a killed export of the same inputs; with
    `audio` (prepare's output), each segment's audio too.

    Raises:
        UsageError: an unknown format or one whose library is missing, an output that
            holds another export (without `force`), or a URL for the output.
        MissingInput: a codec without token parts.
    """
    started = time.perf_counter()
    storage = storage or StorageOptions()
    chosen = export_format(format_name)
    if "://" in output:
        raise InvalidSetting(f"--output must be a local directory, not {output!r}")
    if audio and not chosen.carries_audio:
        raise InvalidSetting(f"--format {format_name} does not carry audio (--audio)")
    shard_audio = ShardAudio(audio, storage) if audio else None
    root = Path(output)
    files = {codec: _parts(url, codec, storage) for codec, url in tokens.items()}
    indexes = sorted(set.intersection(*(set(parts) for parts in files.values())))
    codecs = {codec: provenance(parts[indexes[0]], storage) for codec, parts in files.items()}
    fs, local = filesystem(str(root), storage)
    fence = claim_output(
        fs, local, RUN_FILE, {"format": format_name, "tokens": tokens, "audio": audio},
        ("_export", *_format_outputs(root)), force,
        describe=lambda previous: f"a {previous['format']} export of {previous['tokens']}",
    ).guard(fs)  # fmt: skip
    markers = [root / PARTS_DIR / marker_name(i) for i in indexes]
    done = {i: read_json(fs, str(m)) for i, m in zip(indexes, markers, strict=True) if m.exists()}
    todo = [i for i in indexes if i not in done]
    samples = sum(marker["samples"] for marker in done.values())
    left_out = sum(marker["left_out"] for marker in done.values())
    for count, index in enumerate(todo):
        if progress:
            progress(count, len(todo))
        staging = root / STAGING_DIR / str(index)
        shutil.rmtree(staging, ignore_errors=True)  # A killed run's half-written part.
        staging.mkdir(parents=True)
        counts = JoinCounts()
        part = {c: parts[index] for c, parts in files.items()}
        rows = part_samples(part, storage, counts, shard_audio)
        written = chosen.write_part(rows, staging, index, codecs, shard_audio is not None)
        fence()
        _publish(staging, root)
        marker = {"index": index, "samples": written, "left_out": counts.left_out}
        write_json(fs, str(root / PARTS_DIR / marker_name(index)), marker, fence)
        samples, left_out = samples + written, left_out + counts.left_out
    if progress:
        progress(len(todo), len(todo))
    shutil.rmtree(root / STAGING_DIR, ignore_errors=True)
    fence()
    summary_file = root / "_export" / "summary.json"
    if todo or not summary_file.exists():  # The summary is written once `finish` is done.
        chosen.finish(root, indexes, codecs)
    summary = ExportSummary(
        format=format_name, codecs=list(tokens), parts=len(indexes), parts_run=len(todo),
        parts_already_done=len(done), samples=samples, left_out=left_out,
        wall_seconds=time.perf_counter() - started,
    )  # fmt: skip
    write_json(fs, str(summary_file), summary.to_dict(), fence)
    return summary


def _parts(url: str, codec: str, storage: StorageOptions) -> dict[int, str]:
    """Part index -> part file of `codec`'s table at `url`."""
    found = token_files(codec_tokens_url(url, codec, storage), storage)
    if not found:
        raise MissingInput(f"no token parts of {codec} under {url}")
    return {int(os.path.basename(f).split("-")[1].split(".")[0]): f for f in found}


def _publish(staging: Path, root: Path) -> None:
    """Move every file the format wrote under `staging` to the same place under `root`."""
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = root / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
    shutil.rmtree(staging)


def _format_outputs(root: Path) -> tuple[str, ...]:
    """What a replaced export leaves that `--force` deletes: everything but the claim."""
    return tuple(p.name for p in root.iterdir() if p.name != "_export") if root.is_dir() else ()
