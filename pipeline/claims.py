"""One output, one run: a stage records what it is producing and refuses a different run.

A claim (`_<stage>/run.json`) holds what decides the output (inputs, config) and a `run_id`:
a random id drawn when the claim is created or replaced by `--force`, and kept by every run
that resumes it. A run's writers are fenced: right before each publish (the rename of a
finished file, the upload of an object, a completion marker) they read the run file and
publish only if it still carries the run's id (`Fence`). A forced claim writes its new claim
first and deletes the replaced run's outputs after, so a writer of the replaced run (a
leftover worker of a killed job, or a run still going) is refused from the switch on, and
what it published before the switch is deleted.

What identifies a run is the claim, not a process: every attempt at the same claim (a resume,
`--force` with the same inputs and config, Ray's retry of a task) shares one id, so their
writers never refuse each other. They write the same deterministic files, so a leftover
worker of an earlier attempt that still publishes while a resume runs does no harm.

What remains: a check and its publish are two steps. A writer whose check passed just
before a forced claim can still publish once after it, in the time between its read of the
run file and its rename or upload:
* On a local disk that is a few system calls, and what lands stays only outside the
  directories the forced claim deletes (a replaced driver's `rejects.parquet`, `manifest.json`
  or `summary.json`, until the new run writes its own): a rename into a deleted directory
  fails, and one that lands while the directory is being deleted makes the forced claim fail
  (a rerun claims again).
* On an object store it is the one request or upload after the check, and the object stays
  when it completes after the forced claim listed the old outputs. A completion marker that
  lands so (a few milliseconds' window) would be taken as done by the new run if its unit
  has the same songs (its part the same shards). A shard or token part that lands so is
  rewritten or deleted when the new run redoes or drops its unit; only an upload that
  outlasts the new run's own writing of the same file could replace that file.
Not fenced at all: prepare's fingerprint cache (facts about source files, true whichever run
wrote them) and spot-check outputs (their stage has a claim but no fenced writers).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

from core.config import JsonConfig
from core.errors import OutputInUse
from pipeline.io import atomic_write, exists, is_local, join, read_json, write_json
from schemas.run import CLAIM_VERSION, check_claim

log = logging.getLogger(__name__)

RUN_ID = "run_id"  # The run file's key for the id of the run that holds the output.


class Superseded(OutputInUse):
    """Another run claimed the output (`--force`) after this one: it may write no more."""


@dataclass(frozen=True)
class Fence(JsonConfig):
    """A run's hold on its output, checked by its writers right before each publish.

    Plain strings, so that it travels to Ray workers and unit processes with their job.

    Attributes:
        run_path: The output's run file, as a path of the output's filesystem.
        run_id: The id the claim carried when this run took or resumed it.
    """

    run_path: str
    run_id: str

    def check(self, fs: fsspec.AbstractFileSystem) -> None:
        """One small read: raise Superseded unless the claim still carries this run's id."""
        try:
            current = json.loads(fs.cat_file(self.run_path))
        except FileNotFoundError:
            current = None  # The output was deleted: nobody's to write to.
        if not isinstance(current, dict) or current.get(RUN_ID, "") != self.run_id:
            raise Superseded(
                f"{self.run_path}: another run has claimed this output since this one did "
                "(--force); this run writes nothing more to it"
            )

    def guard(self, fs: fsspec.AbstractFileSystem) -> Callable[[], None]:
        """`check` on `fs`, as the writers of `pipeline.io` take it (`fence=`)."""
        return functools.partial(self.check, fs)


def claim_output(
    fs,
    root: str,
    run_file: str,
    claim: dict[str, Any],
    owned: Iterable[str],
    force: bool,
    describe: Callable[[dict[str, Any]], str],
) -> Fence:
    """Record `claim` at `root/run_file`, resuming when it matches the one already there.

    A different claim is refused (the outputs would mix) unless `force`, which replaces the
    claim and then deletes the stage's `owned` paths under `root` (all but the run file).
    `describe(previous)` words the refusal.

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

    Returns:
        The fence this run's writers check before they publish: the new claim's id, or the
        id of the claim this run resumes.
    """
    run_path = join(root, run_file)
    claim = {**claim, "version": CLAIM_VERSION}
    fence = Fence(run_path, uuid.uuid4().hex)
    if _create(fs, run_path, _encoded({**claim, RUN_ID: fence.run_id})):
        return fence
    # The claim may have been listed as absent a moment ago; s3fs would trust that listing.
    fs.invalidate_cache(run_path)
    previous = check_claim(read_json(fs, run_path), run_path)
    # A claim from before claims had ids holds "": its resumes share that.
    held = previous.pop(RUN_ID, "") if isinstance(previous, dict) else ""
    if previous == claim:
        return Fence(run_path, held)
    if not force:
        raise OutputInUse(
            f"{root} holds {describe(previous)}; use a new --output, or --force to replace it"
        )
    # The new claim first: from here on every writer of the replaced run is refused, and
    # what it published before is deleted below.
    write_json(fs, run_path, {**claim, RUN_ID: fence.run_id})
    for name in owned:
        _remove_all_but(fs, join(root, name), run_path)
    return fence


def _encoded(claim: dict[str, Any]) -> bytes:
    return json.dumps(claim, indent=2, sort_keys=True).encode() + b"\n"


def _remove_all_but(fs: fsspec.AbstractFileSystem, path: str, keep: str) -> None:
    """Delete the file or tree at `path`, except `keep` (and the directories leading to it)."""
    fs.invalidate_cache(path)
    if path == keep or not fs.exists(path):
        return
    if not keep.startswith(f"{path}/"):
        fs.rm(path, recursive=True)
        return
    for child in fs.ls(path, detail=False):
        if child.rstrip("/") != path:  # Not an object store's placeholder for `path` itself.
            _remove_all_but(fs, child, keep)


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
