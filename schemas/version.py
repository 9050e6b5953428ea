"""The one check every reader of a persisted artifact makes: is this a version we know?"""

from __future__ import annotations

from typing import Any

from core.errors import UnsupportedVersion


def check_version(found: Any, supported: int, artifact: str, where: str) -> None:
    """Refuse an artifact whose version is not `supported`.

    Args:
        found: The version the artifact carries (None when it has none).
        supported: The one version this code reads.
        artifact: What the artifact is, for the message ("prepare manifest").
        where: The file's path or URL, for the message.

    Raises:
        UnsupportedVersion: `found` is not `supported`; the message names the file, the
            version found and the version this code reads.
    """
    if found != supported and str(found) != str(supported):
        raise UnsupportedVersion(
            f"{where}: {artifact} version {found!r} is not supported (this code reads version "
            f"{supported}); read it with the code that wrote it, or rerun that stage"
        )


def json_version(data: Any, supported: int, artifact: str, where: str) -> None:
    """`check_version` on the `version` field of a JSON object (a dict)."""
    found = data.get("version") if isinstance(data, dict) else None
    check_version(found, supported, artifact, where)
