"""Corpus discovery: a directory tree, an object-store prefix, or a manifest -> songs.

Song ids are WebDataset key stems, so they must be safe: no dots (WebDataset splits the key
at the first dot), no leading underscore or dash, bounded length, and unique even when two
paths differ only in characters that sanitising removes. A derived id is therefore the
sanitised relative path plus a hash of the exact relative path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
import re
from dataclasses import dataclass

import fsspec

from pipeline.io import StorageOptions, filesystem, read_parquet, to_url
from pipeline.records import Reject, SongSource

AUDIO_EXTENSIONS = frozenset(
    {
        "wav", "wave", "flac", "ogg", "oga", "mp3", "aif", "aiff", "aifc", "w64", "rf64",
        "m4a", "mp4", "aac", "opus", "wma", "webm", "mka", "wv", "ape", "caf", "ac3",
    }
)  # fmt: skip
MANIFEST_EXTENSIONS = frozenset({"jsonl", "json", "csv", "parquet"})
LYRICS_SIDECARS = ("lrc", "txt")  # A .lrc wins over a .txt: it can be aligned.

MAX_ID_STEM = 80
_HASH_CHARS = 12  # 48 bits: a collision among a million songs has odds ~2e-3.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,119}$")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Discovery:
    """What discovery found: the songs to prepare (sorted by id) and inputs it turned away."""

    songs: tuple[SongSource, ...]
    rejects: tuple[Reject, ...]


def _extension(path: str) -> str:
    name = posixpath.basename(path)
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def derive_song_id(relative_path: str) -> str:
    """A key-safe, unique id from a path relative to the corpus root."""
    stem = posixpath.splitext(relative_path)[0]
    readable = _UNSAFE_RUN.sub("-", stem).strip("-_")[:MAX_ID_STEM].strip("-_")
    digest = hashlib.sha1(relative_path.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{readable}-{digest}" if readable else f"song-{digest}"


def normalise_song_id(song_id: str) -> str:
    """Keep a catalog's own id when it is already key-safe, else derive a safe one from it."""
    return song_id if _SAFE_ID.match(song_id) else derive_song_id(song_id)


def discover(input_url: str, storage: StorageOptions) -> Discovery:
    """Find the songs under `input_url` (a directory/prefix) or listed in it (a manifest)."""
    fs, root = filesystem(input_url, storage)
    if _extension(root) in MANIFEST_EXTENSIONS and fs.isfile(root):
        return _from_manifest(fs, root)
    if not fs.isdir(root):
        raise FileNotFoundError(f"input {input_url!r} is neither a directory nor a manifest")
    return _from_tree(fs, root)


def _from_tree(fs: fsspec.AbstractFileSystem, root: str) -> Discovery:
    root = root.rstrip("/")
    files = sorted(fs.find(root))
    present = set(files)
    songs: list[SongSource] = []
    for path in files:
        relative = path[len(root) + 1 :]
        if any(part.startswith(".") for part in relative.split("/")):
            continue  # Hidden files, AppleDouble `._x.mp3` resource forks, `.partial` files.
        if _extension(path) not in AUDIO_EXTENSIONS:
            continue
        stem = path.rsplit(".", 1)[0]
        sidecar = next(
            (f"{stem}.{ext}" for ext in LYRICS_SIDECARS if f"{stem}.{ext}" in present), None
        )
        songs.append(
            SongSource(
                song_id=derive_song_id(relative),
                source=to_url(fs, path),
                lyrics_source=to_url(fs, sidecar) if sidecar else None,
            )
        )
    return _deduplicated(songs, [])


def _read_manifest_rows(fs: fsspec.AbstractFileSystem, path: str) -> list[dict]:
    """Manifest rows as dicts; CSV values stay text so ids like "007" keep their zeros."""
    extension = _extension(path)
    if extension == "parquet":
        return read_parquet(fs, path).to_pylist()
    with fs.open(path, "rb") as handle:
        data = handle.read()
    text = data.decode("utf-8-sig")
    if extension == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    if extension == "json" and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _from_manifest(fs: fsspec.AbstractFileSystem, manifest: str) -> Discovery:
    rows = _read_manifest_rows(fs, manifest)
    if rows and "path" not in rows[0]:
        raise ValueError(f"manifest {manifest!r} has no 'path' column")
    base = posixpath.dirname(manifest)
    manifest_url = to_url(fs, manifest)

    def resolve(value: str) -> str:
        if "://" in value or value.startswith("/"):
            return value
        return to_url(fs, posixpath.join(base, value))

    songs: list[SongSource] = []
    rejects: list[Reject] = []
    for row_number, row in enumerate(rows, start=1):
        raw_path = (row.get("path") or "").strip() if isinstance(row.get("path"), str) else ""
        if not raw_path:
            rejects.append(Reject(manifest_url, "discover", f"manifest row {row_number}: no path"))
            continue
        given_id = row.get("song_id")
        song_id = (
            normalise_song_id(str(given_id))
            if given_id not in (None, "")
            else derive_song_id(raw_path)
        )
        lyrics_path = row.get("lyrics_path")
        songs.append(
            SongSource(
                song_id=song_id,
                source=resolve(raw_path),
                lyrics_source=resolve(lyrics_path) if lyrics_path else None,
                lyrics_text=row.get("lyrics") or None,
                title=_text_or_none(row.get("title")),
                artist=_text_or_none(row.get("artist")),
            )
        )
    return _deduplicated(songs, rejects)


def _text_or_none(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _deduplicated(songs: list[SongSource], rejects: list[Reject]) -> Discovery:
    """Sort by id; a repeated id (a manifest listing a song twice) keeps its first row."""
    seen: dict[str, SongSource] = {}
    for song in songs:
        if song.song_id in seen:
            first = seen[song.song_id].source
            reason = f"duplicate song_id {song.song_id!r} (also {first})"
            rejects.append(Reject(song.source, "discover", reason, song_id=song.song_id))
            continue
        seen[song.song_id] = song
    ordered = tuple(sorted(seen.values(), key=lambda s: s.song_id))
    return Discovery(songs=ordered, rejects=tuple(rejects))
