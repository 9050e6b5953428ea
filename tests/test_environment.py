"""The installed environment is the locked one, and its compiled extensions load."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import pytest
import torch
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

LOCK = REPO_ROOT / "requirements" / "lock.txt"


def _locked_versions() -> dict[str, str]:
    """Package -> version of every lock line whose environment marker holds here."""
    locked = {}
    for line in LOCK.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        pin, _, marker = requirement.partition(";")
        name, version = pin.split("==")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        locked[canonicalize_name(name.split("[")[0])] = version.strip()
    return locked


def test_torchaudio_compiled_extension_loads_beside_torch():
    # torchaudio 2.11.1 imports, then fails in its compiled library against torch 2.11.0
    # ("undefined symbol"); both the import and a call into the library must work.
    import torchaudio
    from torchaudio._extension import _IS_TORCHAUDIO_EXT_AVAILABLE

    assert _IS_TORCHAUDIO_EXT_AVAILABLE, "torchaudio's compiled extension did not load"
    signal = torch.tensor([1.0, 0.0, 0.0, 0.0])
    filtered = torchaudio.functional.lfilter(
        signal, a_coeffs=torch.tensor([1.0, -0.5]), b_coeffs=torch.tensor([1.0, 0.0])
    )
    assert torch.allclose(filtered, torch.tensor([1.0, 0.5, 0.25, 0.125]))
    assert torch.__version__.split("+")[0] == torchaudio.__version__.split("+")[0]


def test_installed_packages_are_the_locked_versions():
    locked = _locked_versions()
    assert {"torch", "torchaudio", "ray", "numpy", "pyarrow"} <= set(locked)
    drift = {}
    for name, version in locked.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            # The tests run under the `dev` install, which takes every extra of the lock.
            drift[name] = f"not installed, locked {version}"
            continue
        if re.sub(r"\+.*", "", installed) != version:
            drift[name] = f"installed {installed}, locked {version}"
    assert not drift, f"not the locked versions (reinstall with scripts/install.sh): {drift}"


@pytest.mark.parametrize("name", ["torch", "torchaudio"])
def test_pyproject_pins_torch_exactly_as_the_lock(name):
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    pinned = re.search(rf'"{name}==([^"]+)"', pyproject)
    assert pinned, f"{name} must be pinned exactly in pyproject.toml"
    assert pinned.group(1) == _locked_versions()[name]


def test_xdist_keeps_a_group_on_one_worker(tmp_path):
    """The suite's integration tests rely on --dist loadgroup keeping each group on one
    worker (one Ray per process); some pytest and xdist pairs silently stop doing so."""
    (tmp_path / "test_grouped.py").write_text(
        "import os, pathlib, pytest\n"
        + "".join(
            f"@pytest.mark.xdist_group('one')\ndef test_{i}():\n"
            f"    pathlib.Path('ran-{i}').write_text(os.environ['PYTEST_XDIST_WORKER'])\n"
            for i in range(6)
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q",
         "-p", "no:cacheprovider", "test_grouped.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-2000:]
    workers = [path.read_text() for path in tmp_path.glob("ran-*")]
    assert len(workers) == 6 and len(set(workers)) == 1, workers
