"""One output, one run: a stage records what it is producing and refuses a different run."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import fsspec

from pipeline.io import atomic_write, exists, is_local, join, read_json, write_json
from schemas.run import CLAIM_VERSION, check_claim

log = logging.getLogger(__name__)


class OutputInUse(RuntimeError):
    """The output already holds a run of different inputs or settings."""


def claim_output(
    fs,
    root: str,
    run_file: str,
    claim: dict[str, Any],
    owned: Iterable[str],
    force: bool,
    describe: Callable[[dict[str, Any]], str],
) -> None:
    """Record `claim` at `root/run_file`, resuming when it matches the one already there.

    A different claim is refused (the outputs would mix) unless `force`, which first deletes
    the stage's `owned` paths under `root`. `describe(previous)` words the refusal.

    The claim is created only if absent, in one atomic step, so that of two runs started at
    the same instant exactly one takes the output and the other re-reads the winner's claim:
    on a local disk the run file is written under a temporary name and hard-linked into place
    (the link fails if the name exists; the file appears complete or not at all); on S3 it is
    one conditional put (`If-None-Match: *`, answered 412 when the object exists). A conflict
    answer (409) on S3 fails the claim as a storage error; a rerun decides again.

    Limitation: other filesystems, and S3-compatible stores that answer conditional writes
    with NotImplemented, get a check-then-write (logged as a warning): two runs started at
    the same instant there can still both claim one output. `force` is not atomic anywhere:
    two forced runs at once can replace each other's claim.
    """
    run_path = join(root, run_file)
    claim = {**claim, "version": CLAIM_VERSION}
    if _create(fs, run_path, json.dumps(claim, indent=2, sort_keys=True).encode() + b"\n"):
        return
    # The claim may have been listed as absent a moment ago; s3fs would trust that listing.
    fs.invalidate_cache(run_path)
    previous = check_claim(read_json(fs, run_path), run_path)
    if previous == claim:
        return
    if not force:
        raise OutputInUse(
            f"{root} holds {describe(previous)}; use a new --output, or --force to replace it"
        )
    for name in owned:
        path = join(root, name)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    write_json(fs, run_path, claim)


def _create(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write `data` to `path` unless it exists; False when it does (someone claimed first)."""
    if is_local(fs):
        return _create_local(path, data)
    if _is_s3(fs):
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno != errno.ENOSYS:
                raise
            reason = "this S3 store does not support conditional writes (If-None-Match)"
    else:
        reason = f"{type(fs).__name__} has no atomic create-if-absent"
    log.warning(
        "%s: %s; two runs started at the same instant could both claim this output", path, reason
    )
    if exists(fs, path):
        return False
    with atomic_write(fs, path) as handle:
        handle.write(data)
    return True


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & {"s3", "s3a"})


def _create_local(path: str, data: bytes) -> bool:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # A name of our own (O_EXCL: no other run writes into it; not `.partial-`, which a
    # finished run's cleanup deletes); a link, unlike a rename, never replaces a file.
    staged = f"{path}.claim-{uuid.uuid4().hex}"
    try:
        with open(staged, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # On disk before it has the final name.
        os.link(staged, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staged)
