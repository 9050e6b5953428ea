"""Local scratch space that belongs to a live process, and the removal of what dead ones left.

A killed unit cannot clean up after itself: its spools and shards in progress (tens of MB)
would stay in the temp dir forever. So every scratch directory lives under
`<scratch>/mucodec-scratch/` and its name records its owner (pid, process start time, host):
creating one first removes those whose owner is gone. The start time tells a reused pid from
the owner; the host keeps machines (or containers) that share a scratch mount from judging
each other's processes. The owner is in the name, not in a file inside, so a directory never
exists without it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator

SCRATCH_DIR = "mucodec-scratch"
_HAS_PROC = os.path.exists("/proc/self/stat")


@contextlib.contextmanager
def owned_scratch(parent: str | None) -> Iterator[str]:
    """A new directory under `<parent or temp dir>/mucodec-scratch/`, removed on exit."""
    root = _scratch_root(parent)
    _remove_abandoned(root)
    path = tempfile.mkdtemp(prefix=owner_tag(os.getpid()), dir=root)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def owner_tag(pid: int) -> str:
    """The name prefix of a scratch directory owned by process `pid` of this host."""
    return f"{pid}-{_start_time(pid) or 0}-{socket.gethostname()}-"


def _remove_abandoned(root: str) -> None:
    """Remove the scratch directories under `root` whose owner on this host has exited."""
    # Another host's directories are not ours to judge: its pids mean nothing here.
    ours = re.compile(rf"(\d+)-(\d+)-{re.escape(socket.gethostname())}-.*")
    for entry in os.scandir(root):
        owner = ours.fullmatch(entry.name)
        if owner and not _alive(int(owner[1]), int(owner[2])):
            shutil.rmtree(entry.path, ignore_errors=True)


def _scratch_root(parent: str | None) -> str:
    root = os.path.join(parent or tempfile.gettempdir(), SCRATCH_DIR)
    with contextlib.suppress(FileExistsError):
        os.mkdir(root)
        # Shared by every user's runs, like /tmp: anyone may add, only owners may remove.
        os.chmod(root, 0o1777)
    return root


def _alive(pid: int, start: int) -> bool:
    if _HAS_PROC:
        try:
            return _start_time(pid) == start
        except PermissionError:  # /proc mounted with hidepid: another user's process.
            return True
    try:  # Without /proc (macOS) only the pid can be checked.
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # Someone else's process: alive.
    return True


def _start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot); None if it does not exist."""
    if not _HAS_PROC:
        return None
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):  # Gone, or exiting as we read.
        return None
    # Field 22. The command name (field 2) may hold spaces and ')', so count from its end.
    return int(stat.rsplit(")", 1)[1].split()[19])
