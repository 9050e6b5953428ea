"""Shared fixtures: where the golden vectors live, and test-tier markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _golden_root() -> Path:
    """The golden vectors sit in `shared/golden` beside the checkout (CI lays it there)."""
    override = os.environ.get("MUCODEC_GOLDEN_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """Root of the golden vectors; in CI their absence is an error, not a skip."""
    root = _golden_root()
    if not root.is_dir():
        message = f"golden vectors not found at {root}; set MUCODEC_GOLDEN_DIR"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def encoder_golden(golden_dir: Path) -> Path:
    return golden_dir / "encoder"


@pytest.fixture(scope="session")
def decoder_golden(golden_dir: Path) -> Path:
    return golden_dir / "decoder"
