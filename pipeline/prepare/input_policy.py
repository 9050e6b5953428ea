"""Which locations a prepare run may read: its own input, and the roots the user names.

A catalog is data, and a manifest row is a string anyone could have written: `/etc/passwd`
as lyrics, `http://10.0.0.1/...` as audio. So discovery decides every location before
anything reads it. By default a run reads only under its input: inside a directory run's
root, or under a manifest's own directory or object-store prefix. Anything else must be
named with `--allow-root`; URLs of schemes that reach a server rather than a store (http,
https, ftp, ...) need it even more obviously, since reading them makes a network request.

Locations are compared on whole path components (`/mnt/music` does not allow
`/mnt/music2`): local paths after resolving symlinks (the location and the roots alike, so a
link cannot lead out and an allowed root may itself be a link), URLs after resolving their
'.' and '..' segments. Deciding a local path reads link names (lstat, readlink), never a
file's contents; deciding a URL is string work and makes no request.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import unquote

import fsspec

from core.errors import InvalidSetting

ALLOW_FLAG = "--allow-root"
# Stores read under a manifest's prefix like files under its directory. Every other scheme
# is read only under an --allow-root.
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
_LOCAL_SCHEMES = frozenset({"file", "local"})
# fsspec reads `a::b` through a chain of filesystems (caches, archives, another protocol),
# so the text before `::` says nothing about what is finally read.
_CHAIN = "::"


def _is_local(location: str) -> bool:
    return fsspec.utils.get_protocol(location) in _LOCAL_SCHEMES


def normalise(location: str) -> str:
    """`location` as discovery hands it on: a URL with its '.' and '..' segments resolved.

    An object store reads `prefix/../x` as a literal key, which would not be the location
    the policy decided on; so the resolved URL is the one decided and the one read. A local
    path is returned unchanged: the OS resolves it when reading just as the policy does.
    """
    if _CHAIN in location or _is_local(location):
        return location
    scheme, _, rest = location.partition("://")
    host, *segments = rest.split("/")
    kept: list[str] = []
    for segment in segments:
        # A server may decode `%2e%2e` into '..' after the check, so it counts as one here.
        step = unquote(segment)
        if step == "..":
            if kept:
                kept.pop()
        elif step != ".":
            kept.append(segment)
    return "/".join([f"{scheme}://{host}", *kept])


def _canonical(location: str) -> str:
    """The form locations are compared in.

    A local path becomes its realpath, a URL its normalised form without a trailing slash.
    """
    if _is_local(location):
        return os.path.realpath(fsspec.core.strip_protocol(location))
    return normalise(location).rstrip("/")


def _under(candidate: str, root: str) -> bool:
    """Whether canonical `candidate` is `root` or inside it, on path-component boundaries."""
    return candidate == root or candidate.startswith(root.rstrip("/") + "/")


def _parent(canonical: str) -> str:
    """The directory or prefix holding a canonical location: what a refusal suggests."""
    scheme, separator, rest = canonical.rpartition("://")
    return f"{scheme}{separator}{posixpath.dirname(rest) or rest}"


def check_allowed_root(root: str) -> None:
    """Refuses an allowed root that cannot name a place to allow.

    Args:
        root: An `--allow-root` value: a local path or a URL prefix.

    Raises:
        InvalidSetting: if `root` is empty, a chained URL, or a URL without a host or bucket.
    """
    if not root.strip():
        raise InvalidSetting("an allowed root must not be empty")
    if _CHAIN in root:
        raise InvalidSetting(f"{root!r} is a chained URL ('::'); allow the location it reads")
    if not _is_local(root) and not root.partition("://")[2].split("/")[0]:
        raise InvalidSetting(f"{root!r} names no host or bucket")


@dataclass(frozen=True)
class InputPolicy:
    """The locations a run may read: under `home`, or under one of `allowed_roots`.

    `home` is the input directory, or the directory or prefix holding the manifest;
    `home_label` names it in refusals ("the manifest's directory"); `allowed_roots` are the
    `--allow-root` values (local paths or URL prefixes).
    """

    home: str
    home_label: str
    allowed_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for root in self.allowed_roots:
            check_allowed_root(root)

    @cached_property
    def _roots(self) -> tuple[str, ...]:
        # Resolved once per run, not once per song.
        return tuple(_canonical(root) for root in (self.home, *self.allowed_roots))

    def refusal(self, location: str) -> str | None:
        """Why `location` may not be read, naming the rule and the flag that would allow it.

        Returns:
            The reason for a rejects row, or None when `location` may be read.
        """
        if _CHAIN in location:
            return (
                f"chained URL refused: {location} would be read through other filesystems "
                "('::'); list the file itself"
            )
        resolved = _canonical(location)
        if any(_under(resolved, root) for root in self._roots):
            return None
        as_given = fsspec.core.strip_protocol(location) if _is_local(location) else location
        shown = location
        if resolved != as_given.rstrip("/"):
            shown += f" (resolves to {resolved})"
        allow = f"allow it with {ALLOW_FLAG} {_parent(resolved)}"
        scheme = fsspec.utils.get_protocol(location)
        if not _is_local(location) and scheme not in OBJECT_STORE_SCHEMES:
            return (
                f"{scheme} URL refused: {shown} is neither a local file nor in an object "
                f"store, and is under no {ALLOW_FLAG}; {allow}"
            )
        return f"outside the allowed roots: {shown} is not under {self._allowed()}; {allow}"

    def _allowed(self) -> str:
        where = f"{self.home_label} {self.home}"
        if self.allowed_roots:
            where += f" or an {ALLOW_FLAG} ({', '.join(self.allowed_roots)})"
        return where
