"""File names as text: a name need not be valid UTF-8, but Arrow strings must be.

Python hands a name whose bytes are not UTF-8 (an old Latin-1 or Windows archive) over as a
`str` with surrogate escapes (PEP 383): `os.fsencode` turns it back into the exact bytes, so
the file can always be opened again. JSON keeps such a string exactly (as `\\udcXX`
escapes); an Arrow string column cannot hold it, so tables store `path_text` and, beside it,
the exact bytes.
"""

from __future__ import annotations

import os


def is_undecodable(path: str) -> bool:
    """Whether `path` came from bytes that are not valid UTF-8 (it holds surrogate escapes)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def path_text(path: str) -> str:
    """`path` as valid UTF-8 text: each undecodable byte shown as `\\xNN`."""
    if not is_undecodable(path):
        return path
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def path_bytes(path: str) -> bytes | None:
    """The exact bytes of an undecodable `path`, None when `path_text` is already exact."""
    return os.fsencode(path) if is_undecodable(path) else None


def json_bytes(text: str) -> bytes:
    """JSON text (from `json.dumps(..., ensure_ascii=False)`) as UTF-8 bytes.

    A surrogate escape can only sit inside a JSON string, where `\\udcXX` is the JSON escape
    for it: the name survives a round trip through `json.loads` byte for byte.
    """
    return text.encode("utf-8", errors="backslashreplace")
