"""Reading prepare's shards back: tar stream -> one row per sample, audio decoded to PCM16.

The tar is read as a stream (no seeking), so an object-store shard is fetched once,
sequentially. Audio stays 16-bit PCM bytes in the row (half the size of float32 on its way
to the tokenizer actors); a sample whose members are missing, whose metadata fails the
schema, or whose FLAC does not decode becomes a row with `error` set instead of raising.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import soundfile as sf

from pipeline.io import StorageOptions, filesystem
from schemas.shard_sample import validate_sample_metadata

REQUIRED_MEMBERS = ("flac", "json")


def iter_shard_samples(url: str, storage: StorageOptions) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample, in tar order; members of a key are adjacent."""
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


def sample_row(shard: str, key: str, members: dict[str, bytes]) -> dict[str, Any]:
    """A tokenizer input row for one sample; `error` is non-empty when it is unusable."""
    row: dict[str, Any] = {
        "shard": shard, "key": key, "error": "", "pcm": b"", "n_samples": 0, "end_of_shard": False,
    }  # fmt: skip
    missing = [m for m in REQUIRED_MEMBERS if m not in members]
    if missing:
        row["error"] = f"sample {key} in {shard} lacks member(s) {missing}"
        return _with_defaults(row)
    try:
        metadata = json.loads(members["json"])
        validate_sample_metadata(metadata)
        pcm, rate = sf.read(io.BytesIO(members["flac"]), dtype="int16", always_2d=True)
    except (ValueError, sf.LibsndfileError, RuntimeError) as error:
        row["error"] = f"sample {key} in {shard}: {error}"
        return _with_defaults(row)
    if rate != metadata["sample_rate"] or pcm.shape[1] != 2:
        row["error"] = (
            f"sample {key} in {shard}: audio is {rate} Hz x {pcm.shape[1]}, not 48 kHz x 2"
        )
        return _with_defaults(row)
    row.update(
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
        pcm=np.ascontiguousarray(pcm).tobytes(),
        n_samples=len(pcm),
    )
    return row


def _with_defaults(row: dict[str, Any]) -> dict[str, Any]:
    """Error rows carry every column too: Ray Data blocks need one schema."""
    defaults = {
        "song_id": "", "segment_index": -1, "start_s": 0.0, "duration_s": 0.0,
        "song_peak": 0.0, "gain": 1.0, "lyrics_aligned": False, "lyrics": "[]",
        "lyrics_text": "", "source": "", "source_sha256": "",
    }  # fmt: skip
    return {**defaults, **row}


def read_shard_rows(row: dict[str, Any], storage: StorageOptions) -> Iterator[dict[str, Any]]:
    """Ray Data flat_map: a `{"shard": url, "name": name}` row -> its sample rows.

    The last row is an end-of-shard marker whose `n_samples` counts the rows before it, so
    the driver knows when every row of the shard has come back from the actors.
    """
    count = 0
    try:
        for key, members in iter_shard_samples(row["shard"], storage):
            count += 1
            yield sample_row(row["name"], key, members)
    except tarfile.TarError as error:
        # A corrupt tar is bad input: one error row stands for the rest of the shard.
        count += 1
        yield _with_defaults(
            {"shard": row["name"], "key": "", "pcm": b"", "n_samples": 0, "end_of_shard": False,
             "error": f"shard {row['name']} unreadable: {type(error).__name__}: {error}"}
        )  # fmt: skip
    except OSError as error:
        # Storage failed (after s3fs's own retries): the shard is not finished, so its part
        # must not be written; a negative count tells the driver, and a rerun retries.
        yield _with_defaults(
            {"shard": row["name"], "key": "", "pcm": b"", "n_samples": -1, "end_of_shard": True,
             "error": f"shard {row['name']}: reading failed: {type(error).__name__}: {error}"}
        )  # fmt: skip
        return
    yield _with_defaults(
        {"shard": row["name"], "key": "", "pcm": b"", "n_samples": count, "end_of_shard": True,
         "error": ""}
    )  # fmt: skip
