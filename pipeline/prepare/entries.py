"""Catalog entries, walked and opened defensively: one odd entry is a reject, never a crash
or a hang.

A real catalog holds more than songs: links in loops, links to nothing or to devices, FIFOs
and sockets, directories that vanish or may not be read while the walk runs, names that are
not UTF-8. Every `stat` and listing of an entry is guarded, and whatever one entry does ends
as a reason for that entry alone. The walk opens no file; only regular files go on, and
`open_regular` checks again what it opened: a FIFO would block its reader for ever and a
device would never end.

Hidden entries are never looked at. A symlink is decided by the input policy before
anything follows it. Real directories are walked first and each real directory once, so a
directory link into the tree adds nothing (its files keep the ids of their real paths), a
link into an --allow-root is walked through the link, and a link cycle ends.

A failure of the machine rather than the entry (an I/O error, no memory) is raised: it must
not turn a song into a reject (docs/reliability.md).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import fsspec

from core.errors import RejectedInput
from pipeline.errors import describe, is_environment_failure
from pipeline.io import is_local

# What an entry is, by its mode bits, when it is not a regular file.
_OTHER_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)

_VANISHED = "vanished during the walk"


@dataclass(frozen=True)
class Unread:
    """An entry the walk did not take, and why.

    `may_hold_songs`: the entry is (or may be, through a link) a directory, so songs may be
    missing behind it; a FIFO named `notes.log` is merely not a song.
    """

    reason: str
    may_hold_songs: bool


@dataclass
class TreeListing:
    """The files under a root (directly or through admitted links) and the entries left unread."""

    files: list[str] = field(default_factory=list)
    unread: dict[str, Unread] = field(default_factory=dict)


class NotARegularFile(RejectedInput, OSError):
    """What was about to be read as a song is a directory, a FIFO, a socket or a device."""


def file_kind(mode: int) -> str:
    """The name of a kind of entry that is not a regular file ("fifo", "directory", ...)."""
    return next((name for test, name in _OTHER_KINDS if test(mode)), "unknown kind")


def walk_local_tree(root: str, refusal: Callable[[str], str | None]) -> TreeListing:
    """Every entry under the local directory `root`, sorted into files and unread entries.

    Args:
        root: The catalog directory (its own listing failing is raised: it is the input).
        refusal: The input policy: why a link's target may not be read, or None.
    """
    tree = TreeListing()
    walked: set[str] = set()
    real_dirs, linked_dirs = [root], []
    while real_dirs or linked_dirs:
        directory = real_dirs.pop() if real_dirs else linked_dirs.pop(0)
        real = os.path.realpath(directory)
        if real in walked:
            continue
        walked.add(real)
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as error:
            if directory == root or is_environment_failure(error):
                raise
            reason = entry_error_reason(error, directory, _VANISHED)
            tree.unread[directory] = Unread(reason, may_hold_songs=True)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                kind = _entry_kind(entry, refusal)
            except _Unreadable as unread:
                tree.unread[entry.path] = unread.unread
                continue
            if kind == "directory":
                real_dirs.append(entry.path)
            elif kind == "linked directory":
                linked_dirs.append(entry.path)
            else:
                tree.files.append(entry.path)
    return tree


class _Unreadable(Exception):
    def __init__(self, unread: Unread) -> None:
        super().__init__(unread.reason)
        self.unread = unread


def _entry_kind(entry: os.DirEntry, refusal: Callable[[str], str | None]) -> str:
    """The entry's kind: a file, a directory or a linked directory; else `_Unreadable`."""
    try:
        if not entry.is_symlink():
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                return "directory"
            if stat.S_ISREG(mode):
                return "file"
            raise _Unreadable(Unread(f"not a regular file ({file_kind(mode)})", False))
        if reason := refusal(entry.path):
            raise _Unreadable(Unread(reason, True))
        mode = os.stat(entry.path).st_mode  # Follows the link, now that it may be read.
    except OSError as error:
        if is_environment_failure(error):
            raise
        raise _Unreadable(Unread(entry_error_reason(error, entry.path, _VANISHED), True)) from None
    if stat.S_ISDIR(mode):
        return "linked directory"
    if stat.S_ISREG(mode):
        return "file"
    raise _Unreadable(Unread(f"a symlink to a {file_kind(mode)}, not a regular file", False))


def entry_error_reason(error: OSError, path: str, gone: str = "file not found") -> str:
    """What a failed `stat`, listing or `open` of `path` says about the entry, in a few words.

    `gone` words a missing entry that is not a link: the walk saw it a moment ago.
    """
    if error.errno == errno.ELOOP:
        return "symlink loop"
    if isinstance(error, FileNotFoundError):  # An object store's has no errno.
        try:
            if os.path.isabs(path):  # A local path (a URL has no links).
                return f"broken symlink: its target {os.readlink(path)!r} does not exist"
        except OSError:  # Not a link (any more): the entry itself has gone.
            pass
        return f"unreadable: {gone}"
    if isinstance(error, PermissionError):
        return "unreadable: permission denied"
    if error.errno == errno.ENAMETOOLONG:
        return "name too long"
    return f"unreadable: {describe(error)}"


def open_regular(fs: fsspec.AbstractFileSystem, path: str, **options) -> BinaryIO:
    """`path` opened for binary reading; a local one only when it is a regular file.

    Opened without blocking (a FIFO would wait for a writer for ever), then what was opened
    is checked, not what the name pointed at a moment earlier. `options` go to `fs.open`
    for other filesystems.

    Raises:
        NotARegularFile: if a local `path` is a directory, FIFO, socket or device.
    """
    if not is_local(fs):
        return fs.open(path, "rb", **options)
    _require_regular(os.stat(path).st_mode)  # A socket cannot even be opened.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        _require_regular(os.fstat(descriptor).st_mode)  # It may have changed since.
    except NotARegularFile:
        os.close(descriptor)
        raise
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def _require_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"not a regular file ({file_kind(mode)})")
