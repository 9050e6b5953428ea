"""Corpus discovery: a directory tree, an object-store prefix, or a manifest -> songs.

Every location is decided by the run's input policy (pipeline/prepare/input_policy.py) before
anything reads it; what the policy refuses becomes a reject, so units only ever get
locations the run may read.

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
from collections.abc import Sequence
from dataclasses import dataclass

import fsspec

from core.errors import InvalidManifest, MissingInput
from pipeline.io import StorageOptions, filesystem, is_local, to_url
from pipeline.parquet_files import read_parquet
from pipeline.prepare.entries import TreeListing, Unread, walk_local_tree
from pipeline.prepare.input_policy import InputPolicy, normalise
from pipeline.prepare.records import Reject, SongSource

AUDIO_EXTENSIONS = frozenset(
    {
        "wav", "wave", "flac", "ogg", "oga", "mp3", "aif", "aiff", "aifc", "w64", "rf64",
        "m4a", "mp4", "aac", "opus", "wma", "webm", "mka", "wv", "ape", "caf", "ac3",
        "eac3", "mp2", "m4b", "dts", "tta", "au",
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
    # The name's own bytes: a name that is not UTF-8 still has a stable id.
    digest = hashlib.sha1(relative_path.encode("utf-8", "surrogateescape")).hexdigest()
    digest = digest[:_HASH_CHARS]
    return f"{readable}-{digest}" if readable else f"song-{digest}"


def normalise_song_id(song_id: str) -> str:
    """Keep a catalog's own id when it is already key-safe, else derive a safe one from it."""
    return song_id if _SAFE_ID.match(song_id) else derive_song_id(song_id)


def discover(
    input_url: str, storage: StorageOptions, allowed_roots: Sequence[str] = ()
) -> Discovery:
    """Find the songs under `input_url` (a directory/prefix) or listed in it (a manifest).

    Only locations under the input (a manifest's own directory or prefix) or under one of
    `allowed_roots` are admitted; the others are rejects naming the flag that would allow
    them.

    Raises:
        FileNotFoundError: if `input_url` is neither a directory nor a manifest.
        InvalidManifest: if the manifest cannot be parsed or has no `path` column.
        InvalidSetting: if an allowed root cannot name a place to allow.
    """
    fs, root = filesystem(input_url, storage)
    if _extension(root) in MANIFEST_EXTENSIONS and fs.isfile(root):
        label = "the manifest's directory" if is_local(fs) else "the manifest's prefix"
        home = to_url(fs, posixpath.dirname(root))
        return _from_manifest(fs, root, InputPolicy(home, label, tuple(allowed_roots)))
    if not fs.isdir(root):
        raise MissingInput(f"input {input_url!r} is neither a directory nor a manifest")
    root = root.rstrip("/")
    policy = InputPolicy(to_url(fs, root), "the input directory", tuple(allowed_roots))
    return _from_tree(fs, root, policy)


def _from_tree(fs: fsspec.AbstractFileSystem, root: str, policy: InputPolicy) -> Discovery:
    # An object store has no links: everything listed under the prefix is inside it.
    tree = walk_local_tree(root, policy.refusal) if is_local(fs) else _object_listing(fs, root)
    present = {*tree.files, *tree.unread}
    songs: list[SongSource] = []
    rejects: list[Reject] = []
    for path in sorted(present):
        relative = path[len(root) + 1 :]
        if any(part.startswith(".") for part in relative.split("/")):
            continue  # Hidden files, AppleDouble `._x.mp3` resource forks, `.partial` files.
        unread = tree.unread.get(path)
        if _extension(path) not in AUDIO_EXTENSIONS:
            if unread and unread.may_hold_songs and _extension(path) not in LYRICS_SIDECARS:
                # Perhaps a directory of songs: telling would mean probing outside.
                rejects.append(Reject(path, "discover", f"{unread.reason}; not followed"))
            continue
        song_id = derive_song_id(relative)
        if unread:
            rejects.append(Reject(path, "discover", unread.reason, song_id))
            continue
        stem = path.rsplit(".", 1)[0]
        sidecar = next(
            (f"{stem}.{ext}" for ext in LYRICS_SIDECARS if f"{stem}.{ext}" in present), None
        )
        if sidecar in tree.unread:
            rejects.append(_lyrics_refused(sidecar, tree.unread[sidecar].reason, song_id))
            sidecar = None
        songs.append(
            SongSource(
                song_id=song_id,
                source=to_url(fs, path),
                lyrics_source=to_url(fs, sidecar) if sidecar else None,
            )
        )
    return _deduplicated(songs, rejects)


def _object_listing(fs: fsspec.AbstractFileSystem, root: str) -> TreeListing:
    """The objects under a prefix; keys that cannot name a song's file are left unread.

    A key ending in '/' is a "directory" marker: ignored when empty, reported when it holds
    data (no file name reaches it). S3 keys are UTF-8; a store that holds other bytes lists
    them (URL-encoded) as U+FFFD, and no request by that name reaches the object.
    """
    listing = TreeListing()
    for path, info in sorted(fs.find(root, detail=True).items()):
        if path.endswith("/"):
            if info.get("size"):
                reason = f"object key ends in '/' yet holds {info['size']:,} bytes"
                listing.unread[path] = Unread(reason, may_hold_songs=True)
        elif "\ufffd" in path:
            reason = "name is not valid UTF-8: the store lists its bytes as U+FFFD"
            listing.unread[path] = Unread(reason, may_hold_songs=False)
        else:
            listing.files.append(path)
    return listing


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


def _from_manifest(fs: fsspec.AbstractFileSystem, manifest: str, policy: InputPolicy) -> Discovery:
    try:
        rows = _read_manifest_rows(fs, manifest)
    except ValueError as error:  # JSON syntax, not UTF-8, not Parquet (ArrowInvalid).
        raise InvalidManifest(f"manifest {manifest!r} cannot be read: {error}") from error
    if rows and "path" not in rows[0]:
        raise InvalidManifest(f"manifest {manifest!r} has no 'path' column")
    base = posixpath.dirname(manifest)
    manifest_url = to_url(fs, manifest)

    def resolve(value: str) -> str:
        if "://" in value or value.startswith("/"):
            return normalise(value)
        return normalise(to_url(fs, posixpath.join(base, value)))

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
        source = resolve(raw_path)
        if refusal := policy.refusal(source):
            rejects.append(Reject(source, "discover", refusal, song_id))
            continue
        lyrics_path = row.get("lyrics_path")
        lyrics_source = resolve(lyrics_path) if lyrics_path else None
        if lyrics_source and (refusal := policy.refusal(lyrics_source)):
            rejects.append(_lyrics_refused(lyrics_source, refusal, song_id))
            lyrics_source = None
        songs.append(
            SongSource(
                song_id=song_id,
                source=source,
                lyrics_source=lyrics_source,
                lyrics_text=row.get("lyrics") or None,
                title=_text_or_none(row.get("title")),
                artist=_text_or_none(row.get("artist")),
                album=_text_or_none(row.get("album")),
            )
        )
    return _deduplicated(songs, rejects)


def _lyrics_refused(path: str, refusal: str, song_id: str) -> Reject:
    return Reject(path, "lyrics", f"{refusal}; song kept without these lyrics", song_id)


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
