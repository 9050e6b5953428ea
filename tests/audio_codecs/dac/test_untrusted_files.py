"""Malicious pickles in a .dac or .pth file run nothing and are refused with a clear error."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib import format as npy_format

from audio_codecs.dac.checkpoint import read_official
from audio_codecs.dac.dac_file import DacFileError, read_dac_file
from core.errors import CheckpointError


class _CreatesFile:
    """Unpickling this would create `path` (if anything ran it)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.path,))


def _npy_with_pickle(payload: object) -> bytes:
    """An .npy file as `np.save` writes one pickled object, with `payload` as the pickle."""
    stream = io.BytesIO()
    header = {"descr": "|O", "fortran_order": False, "shape": ()}
    npy_format.write_array_header_1_0(stream, header)
    pickle.dump(payload, stream, protocol=4)
    return stream.getvalue()


def test_a_malicious_dac_file_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.dac"
    path.write_bytes(_npy_with_pickle({"codes": _CreatesFile(marker), "metadata": {}}))

    with pytest.raises(DacFileError, match=r"posix\.mkdir|os\.mkdir"):
        read_dac_file(path)
    assert not marker.exists()


def test_a_dac_file_with_object_arrays_inside_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.dac"
    with path.open("wb") as handle:
        np.save(handle, {"codes": np.array([None, 1], dtype=object), "metadata": {}})
    with pytest.raises(DacFileError, match="dtype"):
        read_dac_file(path)


def test_a_dac_file_of_another_version_is_refused(tmp_path: Path) -> None:
    meta = {
        "input_db": np.array([-20.0], np.float32),
        "original_length": 10,
        "sample_rate": 44100,
        "chunk_length": 1,
        "channels": 1,
        "padding": True,
        "dac_version": "0.9.0",
    }
    path = tmp_path / "old.dac"
    with path.open("wb") as handle:  # As the official `DACFile.save` writes.
        np.save(handle, {"codes": np.zeros((1, 4, 1), np.uint16), "metadata": meta})
    with pytest.raises(DacFileError, match="dac_version"):
        read_dac_file(path)


def test_a_malicious_pth_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    kwargs = {"encoder_dim": _CreatesFile(marker), "n_codebooks": 4}
    torch.save({"state_dict": {}, "metadata": {"kwargs": kwargs}}, path)

    with pytest.raises(CheckpointError, match=r"encoder_dim.*not plain data"):
        read_official(path)
    assert not marker.exists()


def test_a_pth_that_is_a_malicious_object_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    torch.save(_CreatesFile(marker), path)

    with pytest.raises(CheckpointError, match="expected a dict"):
        read_official(path)
    assert not marker.exists()
