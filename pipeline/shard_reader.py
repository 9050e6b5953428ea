"""Reading prepare's output back: the manifest -> shards; a tar stream -> one row per sample.

`find_shards` is the one reader of prepare's `manifest.json` (tokenize, spotcheck and audit
all go through it). The tar is read as a stream (no seeking), so an object-store shard is
fetched once, sequentially. Audio stays 16-bit PCM bytes in the row (half the size of
float32 on its way to the tokenizer actors); a sample whose members are missing, whose
metadata fails the schema, or whose FLAC does not decode becomes a row with `error` set
instead of raising.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from core.errors import MissingInput
from pipeline.io import StorageOptions, exists, filesystem, join, read_json, to_url
from pipeline.rows import ArrowRow
from schemas.manifest import MANIFEST_FILE, SHARDS_DIR, check_manifest
from schemas.shard_sample import validate_sample_metadata

log = logging.getLogger(__name__)

REQUIRED_MEMBERS = ("flac", "json")

# Kinds of `ShardSampleRow`. Every row of a shard but the last is a SAMPLE (usable, or
# rejected with `error`) or, after a tar error, one SHARD_DAMAGED row standing for the rest
# of the shard (a reject too). The last row is SHARD_END, counting the rows before it, or
# SHARD_FAILED when storage failed: the shard is unfinished and a rerun retries it.
SAMPLE = "sample"
SHARD_DAMAGED = "shard_damaged"
SHARD_END = "shard_end"
SHARD_FAILED = "shard_failed"


@dataclass(frozen=True)
class ShardRef:
    """One shard of prepare's output.

    Attributes:
        name: The shard's file name (unique within the output; rejects and parts use it).
        url: Where to read it (fsspec URL).
        size: Its size in bytes (0 when the manifest lists it but it is missing).
        samples: How many samples prepare's manifest says it holds; None for a bare
            directory of `.tar` files.
    """

    name: str
    url: str
    size: int
    samples: int | None = None


def find_shards(shards_url: str, storage: StorageOptions) -> list[ShardRef]:
    """The shards of a prepare output: its manifest's, else every `.tar` found.

    Args:
        shards_url: Prepare's output URL (holding `manifest.json`), or any directory of
            WebDataset `.tar` shards.
        storage: How to reach object stores.

    Returns:
        The shards, in manifest order (or sorted by path without a manifest).

    Raises:
        UnsupportedVersion: The manifest has a version this code does not read.
        FileNotFoundError: There is neither a manifest nor any `.tar` under `shards_url`.
    """
    fs, root = filesystem(shards_url, storage)
    manifest = join(root, MANIFEST_FILE)
    if exists(fs, manifest):
        data = check_manifest(read_json(fs, manifest), to_url(fs, manifest))
        if not data.get("complete", False):
            log.warning("%s: the prepare run is not complete; reading what is there", root)
        shard_dir = join(root, SHARDS_DIR)
        sizes = {os.path.basename(p): s for p, s in fs.du(shard_dir, total=False).items()}
        for missing in sorted({s["name"] for s in data["shards"]} - set(sizes)):
            # Reading it fails and says so (tokenize: an unfinished part; audit: damaged).
            log.error("%s lists %s, which is not in %s", manifest, missing, shard_dir)
        return [
            ShardRef(s["name"], to_url(fs, join(shard_dir, s["name"])), sizes.get(s["name"], 0),
                     s["samples"])
            for s in data["shards"]
        ]  # fmt: skip
    paths = sorted(p for p in fs.find(root) if p.endswith(".tar"))
    if not paths:
        raise MissingInput(f"no shards (*.tar or a prepare manifest.json) under {shards_url}")
    return [
        ShardRef(p[len(root.rstrip("/")) + 1 :].replace("/", "-"), to_url(fs, p), fs.size(p))
        for p in paths
    ]


@dataclass(frozen=True)
class ShardTask(ArrowRow):
    """A shard for a reading task: the input row of `read_shard_rows`."""

    name: str  # The shard's name (`ShardRef.name`).
    url: str  # Where to read it.


class RowKind:
    """What a row of a shard's stream is, for every row type that carries `kind` and `error`."""

    kind: str
    error: str

    @property
    def usable(self) -> bool:
        """A sample to work on: a SAMPLE row without an error."""
        return self.kind == SAMPLE and not self.error

    @property
    def ends_shard(self) -> bool:
        """The shard's last row (SHARD_END or SHARD_FAILED), not one of its samples."""
        return self.kind in (SHARD_END, SHARD_FAILED)


@dataclass(frozen=True)
class ShardSampleRow(ArrowRow, RowKind):
    """One row out of a shard: a sample's audio and metadata, or a shard-level event.

    `kind` says which (SAMPLE, SHARD_DAMAGED, SHARD_END, SHARD_FAILED above); fields that do
    not apply to a kind keep their defaults (Ray Data blocks need one schema).

    Attributes:
        kind: SAMPLE, SHARD_DAMAGED, SHARD_END or SHARD_FAILED.
        shard: The shard's name.
        key: The sample's key ("" for shard-level rows).
        error: Why a SAMPLE is unusable, why a shard is damaged or failed; "" otherwise.
        shard_rows: SHARD_END only: how many rows of the shard came before it.
        pcm: 16-bit PCM, interleaved stereo at 48 kHz: `[n_samples, 2]` int16, C order.
        n_samples: Audio frames (per channel) in `pcm`.
        song_id, segment_index, start_s, duration_s: Where the segment is in its song (s).
        song_peak: The song's peak before gain (linear); the tokenizer normalises with it.
        gain: The linear gain prepare applied to the stored audio.
        lyrics_aligned: Whether `lyrics` has times (LRC) or is plain text.
        lyrics: The segment's lyric lines as JSON `[{"t": s, "text": ...}]`.
        lyrics_text: The segment's lyrics as text (the `.txt` member).
        source, source_sha256: The source file and its sha256.
        split, artist: The song's split and artist ("" in shards from before splits).
        quality, song_quality: The segment's and the song's quality measures as JSON
            objects ("" in shards from before measures).
        read_s: Seconds spent reading this sample from the tar and decoding its FLAC.
    """

    kind: str
    shard: str
    key: str = ""
    error: str = ""
    shard_rows: int = 0
    pcm: bytes = b""
    n_samples: int = 0
    song_id: str = ""
    segment_index: int = -1
    start_s: float = 0.0
    duration_s: float = 0.0
    song_peak: float = 0.0
    gain: float = 1.0
    lyrics_aligned: bool = False
    lyrics: str = "[]"
    lyrics_text: str = ""
    source: str = ""
    source_sha256: str = ""
    split: str = ""
    artist: str = ""
    quality: str = ""
    song_quality: str = ""
    read_s: float = 0.0


def iter_shard_samples(url: str, storage: StorageOptions) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Read a WebDataset shard as a stream.

    Yields:
        `(key, {extension: bytes})` per sample, in tar order; members of a key are
        adjacent. Links, directories and other non-file members are skipped.

    Raises:
        tarfile.TarError: The tar is damaged (samples before the damage were yielded).
        OSError: Storage failed.
    """
    fs, path = filesystem(url, storage)
    with (
        fs.open(path, "rb", block_size=8 << 20) as handle,
        tarfile.open(fileobj=handle, mode="r|") as tar,
    ):
        key, members = None, {}
        for info in tar:
            if not info.isfile():
                continue
            name = info.name.rsplit("/", 1)[-1]
            sample_key, _, extension = name.partition(".")
            if sample_key != key:
                if key is not None:
                    yield key, members
                key, members = sample_key, {}
            members[extension] = tar.extractfile(info).read()
        if key is not None:
            yield key, members


def sample_row(shard: str, key: str, members: dict[str, bytes]) -> ShardSampleRow:
    """The SAMPLE row of one sample; `error` is non-empty when it is unusable.

    Args:
        shard: The shard's name.
        key: The sample's key.
        members: Its tar members by extension (`flac`, `json`, optional `txt`).
    """
    missing = [m for m in REQUIRED_MEMBERS if m not in members]
    if missing:
        return ShardSampleRow(
            SAMPLE, shard, key, f"sample {key} in {shard} lacks member(s) {missing}"
        )
    try:
        metadata = json.loads(members["json"])
        validate_sample_metadata(metadata)
        pcm, rate = sf.read(io.BytesIO(members["flac"]), dtype="int16", always_2d=True)
    except (ValueError, sf.LibsndfileError, RuntimeError) as error:
        return ShardSampleRow(SAMPLE, shard, key, f"sample {key} in {shard}: {error}")
    if rate != metadata["sample_rate"] or pcm.shape[1] != 2:
        return ShardSampleRow(
            SAMPLE, shard, key,
            f"sample {key} in {shard}: audio is {rate} Hz x {pcm.shape[1]}, not 48 kHz x 2",
        )  # fmt: skip
    return ShardSampleRow(
        kind=SAMPLE,
        shard=shard,
        key=key,
        song_id=metadata["song_id"],
        segment_index=metadata["segment_index"],
        start_s=metadata["start_s"],
        duration_s=metadata["duration_s"],
        song_peak=metadata["song_peak"],
        gain=metadata["gain"],
        lyrics_aligned=metadata["lyrics_aligned"],
        lyrics=json.dumps(metadata["lyrics"], ensure_ascii=False),
        lyrics_text=members.get("txt", b"").decode("utf-8", errors="replace"),
        source=metadata["source"],
        source_sha256=metadata["source_sha256"],
        split=metadata.get("split", ""),
        artist=metadata.get("artist", ""),
        quality=json.dumps(metadata["quality"]) if "quality" in metadata else "",
        song_quality=json.dumps(metadata["song_quality"]) if "song_quality" in metadata else "",
        # Bytes, not a view: Ray Data builds its blocks from views more slowly (measured:
        # the reader took ~20% longer), so the copy saves time.
        pcm=np.ascontiguousarray(pcm).tobytes(),
        n_samples=len(pcm),
    )


def shard_rows(task: ShardTask, storage: StorageOptions) -> Iterator[ShardSampleRow]:
    """Every row of one shard, ending with its SHARD_END (or SHARD_FAILED) row.

    The SHARD_END row counts the rows before it, so the driver knows when every row of the
    shard has come back from the actors. Storage failure is a SHARD_FAILED row, not an
    exception: the other shards go on, and this one's part stays unwritten for a rerun.
    """
    count = 0
    started = time.perf_counter()
    try:
        for key, members in iter_shard_samples(task.url, storage):
            count += 1
            row = sample_row(task.name, key, members)
            finished = time.perf_counter()
            yield dataclasses.replace(row, read_s=finished - started)
            started = time.perf_counter()
    except tarfile.TarError as error:
        # A corrupt tar is bad input: one rejected row stands for the rest of the shard.
        count += 1
        reason = f"shard {task.name} unreadable: {type(error).__name__}: {error}"
        yield ShardSampleRow(SHARD_DAMAGED, task.name, error=reason)
    except OSError as error:
        # Storage failed (after botocore's retries): the shard is not finished, so its part
        # must not be written; a rerun retries.
        reason = f"shard {task.name}: reading failed: {type(error).__name__}: {error}"
        yield ShardSampleRow(SHARD_FAILED, task.name, error=reason)
        return
    yield ShardSampleRow(SHARD_END, task.name, shard_rows=count)


def read_shard_rows(row: dict, storage: StorageOptions) -> Iterator[dict]:
    """Ray Data flat_map edge of `shard_rows`: a `ShardTask` dict -> `ShardSampleRow` dicts."""
    for sample in shard_rows(ShardTask.from_dict(row), storage):
        yield sample.to_dict()
