"""This code's name and version, as every token row records it.

An installed package answers from its metadata. A source checkout that was never
pip-installed (a GPU machine given the repository as files) has none: its version then
comes from `pyproject.toml` beside the packages, with the git commit when `.git` is there,
so rows made from it still say which code made them.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from functools import cache
from pathlib import Path

DISTRIBUTION = "mucodec-pipeline"
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # The checkout holding core/.


@cache
def code_version() -> str:
    """`mucodec-pipeline <version>`, or `... <version> (source <commit>)` from a checkout."""
    try:
        return f"{DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}"
    except importlib.metadata.PackageNotFoundError:
        return source_version(SOURCE_ROOT)


def source_version(root: Path) -> str:
    """The version of the source tree at `root` (its pyproject.toml, its git commit)."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    commit = git_commit(root / ".git")
    where = f"source {commit[:12]}" if commit else "source"
    return f"{project['name']} {project['version']} ({where})"


def git_commit(git_dir: Path) -> str:
    """The commit HEAD names in `git_dir`, read from its files (no git needed); "" if none."""
    try:
        if git_dir.is_file():  # A worktree: `.git` names its own git directory.
            text = git_dir.read_text(encoding="utf-8").removeprefix("gitdir:").strip()
            git_dir = (git_dir.parent / text).resolve()
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        common = git_dir / "commondir"  # A worktree's branches live in the main repository.
        places = [git_dir]
        if common.is_file():
            places.append((git_dir / common.read_text(encoding="utf-8").strip()).resolve())
        for place in places:
            if (place / ref).is_file():
                return (place / ref).read_text(encoding="utf-8").strip()
            packed = place / "packed-refs"
            lines = packed.read_text(encoding="utf-8").splitlines() if packed.is_file() else []
            for line in lines:
                if line.endswith(f" {ref}"):
                    return line.split()[0]
    except OSError:
        pass
    return ""
