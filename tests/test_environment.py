"""The installed environment is the locked one, and its compiled extensions load."""

from __future__ import annotations

import importlib.metadata
import re

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
            continue  # An extra this install did not ask for.
        if re.sub(r"\+.*", "", installed) != version:
            drift[name] = f"installed {installed}, locked {version}"
    assert not drift, f"not the locked versions (reinstall with scripts/install.sh): {drift}"


@pytest.mark.parametrize("name", ["torch", "torchaudio"])
def test_pyproject_pins_torch_exactly_as_the_lock(name):
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    pinned = re.search(rf'"{name}==([^"]+)"', pyproject)
    assert pinned, f"{name} must be pinned exactly in pyproject.toml"
    assert pinned.group(1) == _locked_versions()[name]
