"""Output on another filesystem than the scratch dir: finished files cannot be renamed into
place (EXDEV), so they are copied beside their final name and renamed there.

The second filesystem is a real tmpfs mounted by the test (which needs root, as in CI).
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsspec.implementations.local import LocalFileSystem

from pipeline.io import PARTIAL, upload_file
from pipeline.prepare.stage import prepare_corpus
from tests.pipeline.helpers import (
    mounted_tmpfs,
    read_samples,
    shard_files,
    small_config,
    write_song,
)


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Path]:
    """A directory on its own filesystem, unlike `tmp_path`."""
    with mounted_tmpfs(tmp_path / "tmpfs", "64m") as path:
        assert path.stat().st_dev != tmp_path.stat().st_dev
        yield path


def _partials(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if PARTIAL in p.name]


@pytest.mark.parametrize("direction", ["disk to tmpfs", "tmpfs to disk"])
def test_upload_file_moves_a_file_to_another_filesystem(tmp_path, tmpfs, direction):
    source_dir, target_dir = (
        (tmp_path, tmpfs) if direction == "disk to tmpfs" else (tmpfs, tmp_path)
    )
    source = source_dir / "000000-0000.tar.partial"
    source.write_bytes(os.urandom(300_000))
    data = source.read_bytes()
    target = target_dir / "out" / "shards" / "000000-0000.tar"

    upload_file(LocalFileSystem(), str(source), str(target))

    assert target.read_bytes() == data
    assert not source.exists()
    assert _partials(target_dir) == []


def test_a_copy_that_fails_leaves_nothing_under_the_final_name(tmp_path):
    with mounted_tmpfs(tmp_path / "small", "1m") as small:
        source = tmp_path / "shard.partial"
        source.write_bytes(os.urandom(3 << 20))  # Larger than the filesystem: ENOSPC midway.
        target = small / "shards" / "000000-0000.tar"

        with pytest.raises(OSError) as failure:
            upload_file(LocalFileSystem(), str(source), str(target))

        assert failure.value.errno == errno.ENOSPC
        assert not target.exists() and _partials(small) == []
        assert source.stat().st_size == 3 << 20  # Still there for a retry.


@pytest.mark.integration
def test_prepare_writes_its_output_on_another_filesystem_than_its_scratch(
    ray_local, tmp_path, tmpfs
):
    corpus = tmp_path / "corpus"
    for seed, seconds in enumerate([2.5, 1.5, 2.0]):  # 3 + 2 + 2 one-second segments.
        write_song(str(corpus / f"song{seed}.flac"), seconds=seconds, seed=seed)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output = tmpfs / "prepared"
    config = small_config(str(scratch), songs_per_unit=2)

    summary = prepare_corpus(str(corpus), str(output), config)

    assert summary.failures == [] and summary.units_failed == 0
    assert (summary.units, summary.segments, summary.songs_ok) == (2, 7, 3)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] and manifest["samples"] == 7
    assert len(read_samples(shard_files(str(output)))) == 7
    assert _partials(output) == []
