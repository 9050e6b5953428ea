"""Storage: fsspec URLs, atomic writes and small JSON artifacts.

Every path in the pipeline is an fsspec URL. Writes are atomic so that a crash never leaves a
half file a rerun would trust: on a local filesystem we write `<name>.partial-<pid>` and rename
(a finished scratch file on another filesystem is first copied to that name);
on an object store we stage the file locally and upload it in one `put` (S3 makes an object
visible only once its upload, multipart or not, completes).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import fsspec
from fsspec.implementations.local import LocalFileSystem

from core.config import JsonConfig

PARTIAL = ".partial-"  # `<name>.partial-<pid>`: a local file being written, not yet renamed.
S3_PROTOCOLS = ("s3", "s3a")

# Tries of each S3 request, all made by botocore (docs/reliability.md, "Retried first").
S3_ATTEMPTS = 5


@dataclass(frozen=True)
class StorageOptions(JsonConfig):
    """How to reach object stores; passed to every fsspec filesystem we open.

    Credentials normally come from the environment (AWS_ACCESS_KEY_ID, ...); `endpoint_url`
    points s3fs at a non-AWS server (MinIO, moto). `extra` is handed to fsspec verbatim.
    """

    endpoint_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def for_protocol(self, protocol: str) -> dict[str, Any]:
        """The fsspec options for a filesystem of `protocol` ("s3", "file", ...).

        Returns:
            `extra`, plus for S3 the endpoint and botocore's bounded "adaptive" retries.
        """
        options = dict(self.extra)
        if protocol in S3_PROTOCOLS and self.endpoint_url:
            options.setdefault("endpoint_url", self.endpoint_url)
        if protocol in S3_PROTOCOLS:
            # Transient S3 errors (throttling, 5xx, no answer) are retried by botocore alone:
            # S3_ATTEMPTS tries, with exponential backoff and full jitter; "adaptive" also
            # lowers this client's request rate after a throttling answer.
            retries = {"total_max_attempts": S3_ATTEMPTS, "mode": "adaptive"}
            options.setdefault("config_kwargs", {"retries": retries})
        return options


def filesystem(url: str, storage: StorageOptions) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for `url` (for S3, a `BotocoreRetriedS3FileSystem`) and the path in it."""
    protocol = fsspec.utils.get_protocol(url)
    options = storage.for_protocol(protocol)
    if protocol in S3_PROTOCOLS:
        # Imported here: s3fs brings botocore and aiohttp (0.2 s), which every prepare
        # unit's child process would pay for on local catalogs too.
        from pipeline.s3 import BotocoreRetriedS3FileSystem

        fs = BotocoreRetriedS3FileSystem(**options)
        return fs, fs._strip_protocol(url)
    return fsspec.core.url_to_fs(url, **options)


def join(url: str, *parts: str) -> str:
    """Join URL parts with '/', keeping the scheme intact."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    """Whether `fs` is the local filesystem (atomic renames, partial files)."""
    return isinstance(fs, LocalFileSystem)


def to_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path inside `fs` back to a URL that `filesystem` understands."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def unfenced() -> None:
    """The `fence` of a write that no run's claim guards."""


@contextlib.contextmanager
def atomic_write(
    fs: fsspec.AbstractFileSystem, path: str, fence: Callable[[], None] = unfenced
) -> Iterator[BinaryIO]:
    """Open `path` for binary writing; it appears complete or not at all.

    `fence()` is called once the data is staged, right before it takes the name `path` (the
    rename, the upload); raising keeps it from appearing (`pipeline.claims.Fence`).
    """
    if is_local(fs):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with _renamed_into_place(path, fence) as partial, open(partial, "wb") as handle:
            yield handle
        return
    with tempfile.NamedTemporaryFile(suffix=".upload") as staged:
        yield staged
        staged.flush()
        fence()
        fs.put_file(staged.name, path)


def upload_file(
    fs: fsspec.AbstractFileSystem, local_path: str, path: str, fence: Callable[[], None] = unfenced
) -> None:
    """Move a finished local file to `path` atomically (rename locally, one upload remotely).

    `fence()` is called right before the file takes the name `path`, as in `atomic_write`.
    """
    if is_local(fs):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _move_local(local_path, path, fence)
    else:
        fence()
        fs.put_file(local_path, path)
        os.remove(local_path)


def _move_local(source: str, path: str, fence: Callable[[], None]) -> None:
    """Rename `source` to `path`; across filesystems, copy it beside `path` and rename that.

    A rename cannot cross filesystems (EXDEV: scratch on one disk, output on another), and a
    plain copy would show readers a half file under the final name.
    """
    fence()
    try:
        os.replace(source, path)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    # The copy takes time: the fence is checked again right before its rename.
    with _renamed_into_place(path, fence) as partial:
        shutil.copyfile(source, partial)
    os.remove(source)


@contextlib.contextmanager
def _renamed_into_place(path: str, fence: Callable[[], None]) -> Iterator[str]:
    """Yields a partial name beside `path`, renamed to `path` when the body succeeds.

    Beside `path` means on its filesystem; the partial file is removed when the body (or
    `fence()`, called right before the rename) fails, so `path` appears complete or not at all.
    """
    partial = f"{path}{PARTIAL}{os.getpid()}"
    try:
        yield partial
        fence()
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


def remove_partials(fs: fsspec.AbstractFileSystem, root: str, names: Iterable[str]) -> None:
    """Delete the partial files that killed writers left at or under `root`'s `names`.

    Only where the run owns these paths and none of its writers is still at work: a live
    writer's partial looks just the same.
    """
    if not is_local(fs):
        return  # An upload is a single put: object stores never hold a partial.
    for name in names:
        path = Path(join(root, name))
        for partial in [*path.parent.glob(f"{path.name}{PARTIAL}*"), *path.rglob(f"*{PARTIAL}*")]:
            partial.unlink(missing_ok=True)


def write_json(
    fs: fsspec.AbstractFileSystem, path: str, data: Any, fence: Callable[[], None] = unfenced
) -> None:
    """Writes `data` to `path` atomically as sorted-key, 2-space-indented JSON and a newline.

    `fence()` is called right before the file takes the name `path` (`atomic_write`).
    """
    with atomic_write(fs, path, fence) as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True).encode() + b"\n")


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    """The JSON value stored at `path`."""
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read())


def read_json_dir(fs: fsspec.AbstractFileSystem, directory: str) -> dict[str, Any]:
    """Every `*.json` directly in `directory`, by file name: one listing, parallel reads.

    Reruns read thousands of completion markers; one request at a time to an object store
    would take minutes before any work starts.
    """
    fs.invalidate_cache(directory)
    if not fs.exists(directory):
        return {}
    paths = [p for p in fs.ls(directory, detail=False) if p.endswith(".json")]
    with ThreadPoolExecutor(max_workers=16) as pool:
        contents = list(pool.map(lambda path: read_json(fs, path), paths))
    return {path.rsplit("/", 1)[-1]: data for path, data in zip(paths, contents, strict=True)}


def marker_name(index: int) -> str:
    """The completion marker file of unit of work `index`."""
    return f"{index:06d}.json"


def completed_markers(
    fs: fsspec.AbstractFileSystem, directory: str, units: list[Any], parse: Callable[[Any], Any]
) -> dict[int, Any]:
    """Reads the completion markers of the units that finished with exactly their inputs.

    Args:
        fs: The output's filesystem.
        directory: Where the markers are (`<index>.json`).
        units: Units of work, each with `index` and `fingerprint`.
        parse: Turns a marker's JSON into a result with a `fingerprint`.

    Returns:
        The parsed markers by unit index; a marker with another fingerprint is stale and
        left out.
    """
    markers = read_json_dir(fs, directory)
    done = {}
    for unit in units:
        data = markers.get(marker_name(unit.index))
        if data is not None and (result := parse(data)).fingerprint == unit.fingerprint:
            done[unit.index] = result
    return done


def exists(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether `path` exists, asked afresh (not from a cached listing)."""
    # Object stores cache listings; a stale cache must not hide a completed marker.
    fs.invalidate_cache(path)
    return fs.exists(path)
