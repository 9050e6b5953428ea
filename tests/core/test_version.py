"""The code version every token row records, with and without pip metadata."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from core import version

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def source_tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(
        '[project]\nname = "mucodec-pipeline"\nversion = "9.8.7"\n'
    )
    return root


def test_an_installed_package_answers_from_its_metadata():
    installed = importlib.metadata.version("mucodec-pipeline")
    assert version.code_version() == f"mucodec-pipeline {installed}"


def test_a_checkout_never_installed_still_names_its_version(monkeypatch, tmp_path):
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    monkeypatch.setattr(version, "SOURCE_ROOT", source_tree(tmp_path / "checkout"))
    version.code_version.cache_clear()
    try:
        assert version.code_version() == "mucodec-pipeline 9.8.7 (source)"
    finally:
        version.code_version.cache_clear()


@pytest.mark.parametrize("layout", ["loose", "packed", "detached", "worktree"])
def test_the_commit_is_read_from_git_files_in_every_layout(tmp_path, layout: str):
    root = source_tree(tmp_path / "checkout")
    git = tmp_path / "repo.git" if layout == "worktree" else root / ".git"
    git.mkdir()
    if layout == "detached":
        (git / "HEAD").write_text(COMMIT + "\n")
    else:
        (git / "HEAD").write_text("ref: refs/heads/main\n")
    if layout == "loose":
        (git / "refs/heads").mkdir(parents=True)
        (git / "refs/heads/main").write_text(COMMIT + "\n")
    if layout == "packed":
        (git / "packed-refs").write_text(f"# pack-refs\n{COMMIT} refs/heads/main\n")
    if layout == "worktree":  # `.git` is a file; the branch lives in the main repository.
        main = tmp_path / "main.git"
        (main / "refs/heads").mkdir(parents=True)
        (main / "refs/heads/main").write_text(COMMIT + "\n")
        (git / "commondir").write_text("../main.git\n")
        (root / ".git").write_text(f"gitdir: {git}\n")
    assert version.source_version(root) == f"mucodec-pipeline 9.8.7 (source {COMMIT[:12]})"


def test_a_tree_without_git_says_source_alone(tmp_path):
    assert version.source_version(source_tree(tmp_path)) == "mucodec-pipeline 9.8.7 (source)"
