"""The fault soak's processes and mounts: job sessions it can kill, and a small tmpfs disk.

A job runs in its own session so that the soak can kill it whole, find what outlived it,
and undo everything (sessions, mounts) even when the soak itself is interrupted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

LINGER_S = 10.0  # Ray's processes may take a moment to follow their driver out.


def session_members(session: int) -> list[int]:
    """Live processes of `session` (a job started with start_new_session: its pid)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # Gone meanwhile.
        if int(fields[3]) == session and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def kill_session(session: int) -> None:
    """SIGKILLs every process of `session` (a job's session id: its pid)."""
    # The group first (atomic), then anyone of the session who moved to another group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session, signal.SIGKILL)
    for pid in session_members(session):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def sweep_session(session: int, linger: float = LINGER_S) -> int:
    """Processes of a finished job's session still alive after `linger` s; killed."""
    deadline = time.monotonic() + linger
    while session_members(session) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = len(session_members(session))
    if left:
        kill_session(session)
    return left


@dataclass
class Resources:
    """What the soak must undo even when interrupted: live job sessions and mounts."""

    sessions: set[int] = field(default_factory=set)
    mounts: list[str] = field(default_factory=list)

    def release(self) -> None:
        """Kills every live job session and unmounts every mount."""
        for session in list(self.sessions):
            kill_session(session)
        self.sessions.clear()
        for mount in self.mounts:
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=30)
        self.mounts.clear()


@contextlib.contextmanager
def small_disk(path: str, size: int, resources: Resources) -> Iterator[str]:
    """A tmpfs of `size` bytes at `path`; raises OSError when it cannot be mounted."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    if mounted.returncode != 0:
        raise OSError(errno.EPERM, f"mount -t tmpfs: {mounted.stderr.strip()}")
    resources.mounts.append(path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)
        resources.mounts.remove(path)


def tmpfs_unavailable(workdir: str, resources: Resources) -> str | None:
    """Why the full-disk fault cannot run here, or None when it can."""
    try:
        with small_disk(os.path.join(workdir, "tmpfs-probe"), 1 << 20, resources):
            return None
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
