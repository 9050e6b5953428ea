"""Trust boundaries for inputs: where a run may read, and one size cap for lyrics.

Real files and symlinks, a real HTTP server on loopback that counts the requests it gets,
an audit hook that sees every file this process opens or lists, and one prepare run on Ray
whose shards must hold no byte from outside the allowed roots.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from core.errors import OutputInUse
from pipeline.io import StorageOptions
from pipeline.prepare.corpus import discover
from pipeline.prepare.input_policy import InputPolicy, check_allowed_root, normalise
from pipeline.prepare.records import SongSource
from pipeline.prepare.song import MAX_LYRICS_BYTES, read_lyrics
from pipeline.prepare.stage import prepare_corpus
from pipeline.prepare.unit import PrepareConfig
from tests.pipeline.helpers import (
    read_samples,
    run_unit,
    shard_files,
    small_config,
    tar_members,
    write_song,
)

STORAGE = StorageOptions()
SECRET = b"root:x:0:0:a line that must never reach a shard\n"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _write_manifest(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _under(path: str, directory: Path) -> bool:
    return os.path.realpath(path).startswith(f"{directory}/")


# --- What this process opens, and what an HTTP server is asked ------------------------------

_watch: list[list[str]] = []  # The lists collecting paths while a test watches.


def _audit(event: str, args: tuple) -> None:
    # Builtin and os-level opens, and directory listings, all raise these audit events.
    watched = event in ("open", "os.scandir", "os.listdir")
    if _watch and watched and args and isinstance(args[0], str | bytes | os.PathLike):
        _watch[-1].append(os.fsdecode(args[0]))


@functools.cache
def _install_audit_hook() -> None:
    sys.addaudithook(_audit)  # Hooks cannot be removed; this one idles when nothing watches.


@contextlib.contextmanager
def _touched() -> Iterator[list[str]]:
    """Every path this process opens or lists inside the `with` block."""
    _install_audit_hook()
    paths: list[str] = []
    _watch.append(paths)
    try:
        yield paths
    finally:
        _watch.remove(paths)


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.server.requests.append(self.requestline)
        return parsed

    def log_message(self, format: str, *args) -> None:
        pass  # Keeps the test output to the test's own.


@pytest.fixture
def http_server(tmp_path) -> Iterator[tuple[Path, str, list[str]]]:
    """A loopback HTTP server: (the folder it serves, its base URL, the requests it got)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_CountingHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_port}", server.requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def base(tmp_path) -> Path:
    """tmp_path with its symlinks resolved, so expected reasons can be written out."""
    return tmp_path.resolve()


# --- The policy on its own ------------------------------------------------------------------


def test_roots_match_on_whole_path_components():
    policy = InputPolicy("/data/manifests", "the manifest's directory", ("/mnt/music",))
    assert policy.refusal("/mnt/music/a.flac") is None
    assert policy.refusal("/mnt/music/Artist/Album/b.flac") is None
    refusal = policy.refusal("/mnt/music2/a.flac")
    assert refusal is not None and refusal.startswith("outside the allowed roots: ")
    assert refusal.endswith("music2")  # The suggestion is the file's own directory.
    assert policy.refusal("/data/manifests2/a.flac") is not None

    store = InputPolicy("s3://bucket/music", "the manifest's prefix", ("http://127.0.0.1:80/",))
    assert store.refusal("s3://bucket/music/a.flac") is None
    assert store.refusal("s3://bucket/music2/a.flac") is not None
    assert store.refusal("s3://bucket-2/music/a.flac") is not None
    assert store.refusal("http://127.0.0.1:80/a.flac") is None
    assert store.refusal("http://127.0.0.1:8000/a.flac") is not None


def test_urls_are_decided_after_resolving_dot_segments_and_read_as_decided():
    store = InputPolicy("s3://bucket/music", "the manifest's prefix")
    escaped = "s3://bucket/music/../secret/x.wav"
    assert store.refusal(escaped) == (
        f"outside the allowed roots: {escaped} (resolves to s3://bucket/secret/x.wav) is not "
        "under the manifest's prefix s3://bucket/music; allow it with --allow-root "
        "s3://bucket/secret"
    )
    assert store.refusal("s3://bucket/music/%2e%2e/secret/x.wav") is not None
    # Admitted after resolving, so it is handed on resolved: a store reads keys literally.
    assert store.refusal("s3://bucket/other/../music/x.wav") is None
    assert normalise("s3://bucket/other/../music/./x.wav") == "s3://bucket/music/x.wav"
    assert normalise("s3://bucket/../../x.wav") == "s3://bucket/x.wav"  # Not above the bucket.
    assert normalise("/local/../path") == "/local/../path"  # The OS resolves it, as decided.


def test_other_schemes_and_chained_urls_are_refused_by_their_own_rule():
    policy = InputPolicy("/data/manifests", "the manifest's directory")
    assert policy.refusal("http://127.0.0.1:9/remote.wav") == (
        "http URL refused: http://127.0.0.1:9/remote.wav is neither a local file nor in an "
        "object store, and is under no --allow-root; allow it with --allow-root "
        "http://127.0.0.1:9"
    )
    assert policy.refusal("ftp://host/a.wav").startswith("ftp URL refused: ")
    chained = "simplecache::file:///data/manifests/a.wav"
    assert policy.refusal(chained).startswith("chained URL refused: ")
    assert policy.refusal("/data/manifests/a.wav::http://host/x").startswith("chained URL")


@pytest.mark.parametrize("root", ["", "  ", "s3://", "http:///x", "blockcache::s3://b/x"])
def test_roots_that_name_no_place_are_refused(root):
    with pytest.raises(ValueError):
        check_allowed_root(root)
    with pytest.raises(ValueError):
        InputPolicy("/data", "the input directory", (root,))


def test_allowed_roots_and_locations_compare_by_real_path(base):
    real = base / "disks" / "music"
    real.mkdir(parents=True)
    (base / "music-link").symlink_to(real)
    by_link = InputPolicy(str(base / "manifests"), "the manifest's directory",
                          (str(base / "music-link"),))  # fmt: skip
    assert by_link.refusal(str(real / "a.flac")) is None
    by_real = InputPolicy(str(base / "manifests"), "the manifest's directory", (str(real),))
    assert by_real.refusal(str(base / "music-link" / "a.flac")) is None
    assert by_real.refusal(f"file://{base}/music-link/a.flac") is None


def test_the_config_carries_roots_and_cap_through_json():
    config = PrepareConfig(max_lyrics_bytes=4096, allowed_roots=("/mnt/music", "s3://b/x"))
    assert PrepareConfig.from_json(config.to_json()) == config


# --- Manifests ------------------------------------------------------------------------------


def test_a_manifest_of_absolute_paths_elsewhere_is_one_flag_away(base):
    music = base / "mnt" / "music"
    for name in ("a.flac", "b.flac"):
        _write(music / name, b"audio")
    manifests = base / "data" / "manifests"
    manifest = _write_manifest(
        manifests / "catalog.jsonl", [{"path": str(music / n)} for n in ("a.flac", "b.flac")]
    )
    with _touched() as touched:
        found = discover(manifest, STORAGE)
    assert found.songs == ()
    assert [(r.stage, r.reason) for r in found.rejects] == [
        ("discover", f"outside the allowed roots: {music}/{name} is not under the manifest's "
                     f"directory {manifests}; allow it with --allow-root {music}")
        for name in ("a.flac", "b.flac")
    ]  # fmt: skip
    assert not [path for path in touched if _under(path, music)]  # Decided, never opened.
    suggested = found.rejects[0].reason.rsplit("--allow-root ", 1)[1]
    allowed = discover(manifest, STORAGE, allowed_roots=[suggested])
    # Songs come sorted by id, whose readable part a long temporary path may cut short.
    assert sorted(s.source for s in allowed.songs) == [str(music / n) for n in ("a.flac", "b.flac")]
    assert allowed.rejects == ()


def test_manifest_paths_and_lyrics_outside_its_directory_are_refused(base):
    catalog, outside = base / "catalog", base / "outside"
    _write(catalog / "audio" / "in.wav", b"audio")
    _write(outside / "secret.wav", b"audio")
    _write(outside / "passwd", SECRET)
    rows = [
        {"song_id": "inside", "path": "audio/in.wav"},
        {"song_id": "inside-dots", "path": "audio/../audio/in.wav"},
        {"song_id": "inside-url", "path": f"file://{catalog}/audio/in.wav"},
        {"song_id": "up", "path": "../outside/secret.wav"},
        {"song_id": "deep", "path": "audio/../../outside/secret.wav"},
        {"song_id": "absolute", "path": str(outside / "secret.wav")},
        {"song_id": "file-url", "path": f"file://{outside}/secret.wav"},
        {"song_id": "etc", "path": "file:///etc/hostname"},
        {"song_id": "chained", "path": f"audio/in.wav::file://{outside}/secret.wav"},
        {"song_id": "lyrics", "path": "audio/in.wav", "lyrics_path": str(outside / "passwd")},
        {"song_id": "lyrics-up", "path": "audio/in.wav", "lyrics_path": "../outside/passwd"},
        {"song_id": "passwd", "path": "audio/in.wav", "lyrics_path": "/etc/passwd"},
    ]
    manifest = _write_manifest(catalog / "catalog.jsonl", rows)
    with _touched() as touched:
        found = discover(manifest, STORAGE)

    kept = {song.song_id: song for song in found.songs}
    assert sorted(kept) == ["inside", "inside-dots", "inside-url", "lyrics", "lyrics-up",
                            "passwd"]  # fmt: skip
    assert not [song for song in found.songs if song.lyrics_source]
    stages = {r.song_id: r.stage for r in found.rejects}
    assert stages == {"up": "discover", "deep": "discover", "absolute": "discover",
                      "file-url": "discover", "etc": "discover", "chained": "discover",
                      "lyrics": "lyrics", "lyrics-up": "lyrics", "passwd": "lyrics"}  # fmt: skip
    reasons = {r.song_id: r.reason for r in found.rejects}
    allow = f"allow it with --allow-root {outside}"
    assert reasons["up"] == (
        f"outside the allowed roots: {catalog}/../outside/secret.wav (resolves to "
        f"{outside}/secret.wav) is not under the manifest's directory {catalog}; {allow}"
    )
    for song_id in ("deep", "absolute", "file-url"):
        assert reasons[song_id].startswith("outside the allowed roots: ")
        assert reasons[song_id].endswith(allow)
    assert reasons["etc"].endswith("allow it with --allow-root /etc")
    assert reasons["lyrics"].endswith(f"{allow}; song kept without these lyrics")
    assert reasons["lyrics-up"].endswith(f"{allow}; song kept without these lyrics")
    assert reasons["passwd"] == (
        "outside the allowed roots: /etc/passwd is not under the manifest's directory "
        f"{catalog}; allow it with --allow-root /etc; song kept without these lyrics"
    )
    assert not [path for path in touched if _under(path, outside) or path.startswith("/etc/")]


def test_http_urls_get_no_request_unless_allowed_and_are_read_when_allowed(
    base, scratch, http_server
):
    served, url, requests = http_server
    write_song(str(served / "remote.wav"), seconds=1.5)
    (served / "remote.lrc").write_text("[00:00.20]over the wire\n")
    _write(base / "catalog" / "local.wav", b"audio")
    lyrics = f"{url}/remote.lrc"
    manifest = _write_manifest(
        base / "catalog" / "catalog.jsonl",
        [
            {"song_id": "remote", "path": f"{url}/remote.wav", "lyrics_path": lyrics},
            {"song_id": "local", "path": "local.wav", "lyrics_path": lyrics},
        ],
    )
    refused = discover(manifest, STORAGE)
    assert [s.song_id for s in refused.songs] == ["local"]
    assert refused.songs[0].lyrics_source is None
    reasons = {(r.song_id, r.stage): r.reason for r in refused.rejects}
    assert set(reasons) == {("remote", "discover"), ("local", "lyrics")}
    assert reasons[("remote", "discover")].startswith("http URL refused: ")
    assert f"allow it with --allow-root {url}" in reasons[("local", "lyrics")]
    assert requests == []

    allowed = discover(manifest, STORAGE, allowed_roots=[f"{url}/"])
    remote = next(s for s in allowed.songs if s.song_id == "remote")
    assert remote.source == f"{url}/remote.wav"
    assert requests == []  # Discovery decides on the URL's text alone.

    result = run_unit([remote], str(base / "out"), small_config(scratch))
    assert (result.songs_ok, result.segments, result.rejects) == (1, 2, [])
    samples = read_samples(shard_files(str(base / "out")))
    assert [s.meta["source"] for s in samples] == [f"{url}/remote.wav"] * 2
    assert samples[0].txt == "over the wire"
    assert any("/remote.wav" in line for line in requests)


# --- Directory trees ------------------------------------------------------------------------


def _tree_with_links(base: Path) -> tuple[Path, Path]:
    """A catalog whose links lead in and out of it; returns (catalog, outside)."""
    catalog, outside = base / "catalog", base / "outside"
    _write(catalog / "real" / "a.wav", b"audio")
    _write(catalog / "real" / "a.lrc", b"[00:00.10]inside\n")
    _write(catalog / "b.wav", b"audio")
    _write(outside / "secret.wav", b"audio")
    _write(outside / "passwd", SECRET)
    _write(outside / "album" / "c.wav", b"audio")
    (catalog / "link-in.wav").symlink_to(catalog / "real" / "a.wav")
    (catalog / "link-out.wav").symlink_to("../outside/secret.wav")
    (catalog / "b.lrc").symlink_to(outside / "passwd")
    (catalog / "dir-in").symlink_to(catalog / "real")
    (catalog / "dir-out").symlink_to(outside / "album")
    (catalog / "real" / "loop").symlink_to("..")
    return catalog, outside


def test_tree_symlinks_leading_out_are_refused_and_never_followed(base):
    catalog, outside = _tree_with_links(base)
    with _touched() as touched:
        found = discover(str(catalog), STORAGE)
    by_path = {os.path.relpath(s.source, catalog): s for s in found.songs}
    # The directory link into the tree and the cycle add nothing; the file link is a path.
    assert sorted(by_path) == ["b.wav", "link-in.wav", "real/a.wav"]
    assert by_path["b.wav"].lyrics_source is None
    assert by_path["real/a.wav"].lyrics_source == str(catalog / "real" / "a.lrc")
    rejects = {os.path.relpath(r.path, catalog): r for r in found.rejects}
    assert {path: r.stage for path, r in rejects.items()} == {
        "link-out.wav": "discover", "b.lrc": "lyrics", "dir-out": "discover",
    }  # fmt: skip
    assert rejects["link-out.wav"].reason == (
        f"outside the allowed roots: {catalog}/link-out.wav (resolves to {outside}/secret.wav) "
        f"is not under the input directory {catalog}; allow it with --allow-root {outside}"
    )
    assert rejects["link-out.wav"].song_id is not None
    assert rejects["b.lrc"].song_id == by_path["b.wav"].song_id
    assert rejects["b.lrc"].reason.endswith("; song kept without these lyrics")
    assert rejects["dir-out"].reason.endswith(f"allow it with --allow-root {outside}; not followed")
    assert not [path for path in touched if _under(path, outside)]


def test_an_allowed_root_admits_the_links_into_it_and_walks_linked_directories(base):
    catalog, outside = _tree_with_links(base)
    found = discover(str(catalog), STORAGE, allowed_roots=[str(outside)])
    by_path = {os.path.relpath(s.source, catalog): s for s in found.songs}
    assert sorted(by_path) == ["b.wav", "dir-out/c.wav", "link-in.wav", "link-out.wav",
                               "real/a.wav"]  # fmt: skip
    assert by_path["b.wav"].lyrics_source == str(catalog / "b.lrc")
    assert found.rejects == ()


# --- One size cap for lyrics ----------------------------------------------------------------


def test_inline_lyrics_are_measured_in_utf8_bytes_against_the_cap():
    fits = SongSource("s", "/catalog/s.wav", lyrics_text="é" * 50)  # 100 bytes, 50 characters
    lyrics, reject = read_lyrics(fits, STORAGE, max_bytes=100)
    assert reject is None and lyrics.text == "é" * 50
    over = SongSource("s", "/catalog/s.wav", lyrics_text="é" * 51)
    lyrics, reject = read_lyrics(over, STORAGE, max_bytes=100)
    assert lyrics.text == "" and not lyrics.lines
    assert (reject.path, reject.stage, reject.song_id) == ("/catalog/s.wav", "lyrics", "s")
    assert reject.reason == (
        "unusable lyrics: 102 bytes of inline text, over the 100-byte cap "
        "(--max-lyrics-bytes); song kept without lyrics"
    )
    default = SongSource("s", "/catalog/s.wav", lyrics_text="a" * (MAX_LYRICS_BYTES + 1))
    assert read_lyrics(default, STORAGE, PrepareConfig().max_lyrics_bytes)[1] is not None


def test_inline_lyrics_that_are_not_valid_unicode_cost_the_lyrics_not_the_unit():
    """JSON's "\ud800" decodes to a lone surrogate, which no UTF-8 encoder accepts."""
    song = SongSource("s", "/catalog/s.wav", lyrics_text=json.loads('"la \\ud800 la"'))
    lyrics, reject = read_lyrics(song, STORAGE, max_bytes=100)
    assert lyrics.text == "" and reject.stage == "lyrics"
    assert reject.reason.startswith("unusable lyrics: inline text is not valid Unicode")


def test_lyrics_over_a_configured_cap_cost_the_lyrics_not_the_song(base, scratch):
    catalog = base / "catalog"
    for seed, name in enumerate(["file.wav", "inline.wav", "small.wav"]):
        write_song(str(catalog / name), seconds=1.5, seed=seed)
    (catalog / "file.lrc").write_text("[00:00.10]" + "la " * 30 + "\n")
    songs = [
        SongSource("file", str(catalog / "file.wav"), lyrics_source=str(catalog / "file.lrc")),
        SongSource("inline", str(catalog / "inline.wav"), lyrics_text="[00:00.10]" + "x" * 90),
        SongSource("small", str(catalog / "small.wav"), lyrics_text="[00:00.10]short"),
    ]
    output = str(base / "out")
    result = run_unit(songs, output, small_config(scratch, max_lyrics_bytes=64))
    assert result.songs_ok == 3
    reasons = {r.song_id: (r.stage, r.reason) for r in result.rejects}
    assert reasons == {
        "file": ("lyrics", "unusable lyrics: the file is over the 64-byte cap "
                           "(--max-lyrics-bytes); song kept without lyrics"),
        "inline": ("lyrics", "unusable lyrics: 100 bytes of inline text, over the 64-byte "
                             "cap (--max-lyrics-bytes); song kept without lyrics"),
    }  # fmt: skip
    texts = {s.key: s.txt for s in read_samples(shard_files(output))}
    assert texts == {"file_00000": "", "file_00001": "", "inline_00000": "",
                     "inline_00001": "", "small_00000": "short", "small_00001": ""}  # fmt: skip


# --- End to end -----------------------------------------------------------------------------


@pytest.mark.integration
def test_prepare_puts_no_outside_byte_in_a_shard_and_allowing_more_resumes(ray_local, base):
    catalog, outside, scratch = base / "catalog", base / "outside", base / "scratch"
    scratch.mkdir()
    for seed, path in enumerate([catalog / "in.flac", catalog / "big.flac",
                                 outside / "absolute.flac", outside / "up.flac"]):  # fmt: skip
        write_song(str(path), seconds=1.5, seed=seed)
    _write(outside / "passwd", SECRET)
    rows = [
        {"song_id": "in", "path": "in.flac", "lyrics_path": str(outside / "passwd")},
        {"song_id": "absolute", "path": str(outside / "absolute.flac")},
        {"song_id": "up", "path": "../outside/up.flac"},
        {"song_id": "etc", "path": "file:///etc/hostname"},
        {"song_id": "big", "path": "big.flac", "lyrics": SECRET.decode() * 25_000},  # > 1 MiB
    ]
    manifest = _write_manifest(catalog / "catalog.jsonl", rows)
    output = base / "out"
    config = small_config(str(scratch), songs_per_unit=4)

    summary = prepare_corpus(manifest, str(output), config)
    assert (summary.songs_in, summary.songs_ok) == (5, 2)
    shards = shard_files(str(output))
    members = [data for path in shards for _, data in tar_members(path)]
    assert members and not [data for data in members if SECRET.strip() in data]
    assert sum(map(len, members)) < 2_000_000  # No copy of the big inline lyrics either.
    samples = read_samples(shards)
    assert {s.meta["source"] for s in samples} == {str(catalog / "in.flac"),
                                                   str(catalog / "big.flac")}  # fmt: skip
    rejects = pq.read_table(output / "rejects.parquet").to_pylist()
    assert sorted((r["song_id"], r["stage"]) for r in rejects) == [
        ("absolute", "discover"), ("big", "lyrics"), ("etc", "discover"), ("in", "lyrics"),
        ("up", "discover"),
    ]  # fmt: skip
    assert all("--allow-root" in r["reason"] or "--max-lyrics-bytes" in r["reason"]
               for r in rejects)  # fmt: skip

    # Allowing more is the same run, resumed; another lyrics cap is another run.
    with pytest.raises(OutputInUse):
        prepare_corpus(manifest, str(output), small_config(str(scratch), songs_per_unit=4,
                                                           max_lyrics_bytes=10))  # fmt: skip
    wider = small_config(str(scratch), songs_per_unit=4, allowed_roots=(str(outside),))
    summary = prepare_corpus(manifest, str(output), wider)
    assert (summary.songs_in, summary.songs_ok) == (5, 4)
    sources = {s.meta["source"] for s in read_samples(shard_files(str(output)))}
    assert sources == {str(catalog / "in.flac"), str(catalog / "big.flac"),
                       str(outside / "absolute.flac"), f"{catalog}/../outside/up.flac"}  # fmt: skip
