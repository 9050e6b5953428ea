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
    """Root of the golden vectors; their absence fails the parity tests rather than skip them."""
    root = _golden_root()
    if not root.is_dir():
        pytest.fail(f"golden vectors not found at {root}: put shared/ beside the checkout or "
                    "set MUCODEC_GOLDEN_DIR")  # fmt: skip
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that reads the golden vectors, directly or through a fixture, is `golden`."""
    for item in items:
        if "golden_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.golden)


@pytest.fixture(scope="session")
def encoder_golden(golden_dir: Path) -> Path:
    return golden_dir / "encoder"


@pytest.fixture(scope="session")
def decoder_golden(golden_dir: Path) -> Path:
    return golden_dir / "decoder"


@pytest.fixture(scope="session")
def dac_golden(golden_dir: Path) -> Path:
    """The DAC golden folder (`shared/golden/dac`)."""
    return golden_dir / "dac"


@pytest.fixture(scope="session")
def encodec_golden(golden_dir: Path) -> Path:
    """The EnCodec golden folder (`shared/golden/encodec`)."""
    return golden_dir / "encodec"


# --- Pipeline tests: one local Ray for the whole session -------------------------------------

# Dummy credentials for the loopback S3 server (moto). They must be in the environment before
# Ray starts: Ray workers, and the crash-isolation children they spawn, inherit the
# environment Ray was started with, not the test's later changes.
TEST_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# The pipeline's own waits between tries (pipeline.errors.with_retries) at a hundredth, so
# that fault tests do not sleep for seconds; set before Ray starts for the same reason.
TEST_RETRY_ENV = {"MUCODEC_RETRY_DELAY_SCALE": "0.01"}


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray (2 CPUs, no dashboard) shared by every test that runs a Ray job."""
    import logging

    import ray

    test_env = {**TEST_AWS_ENV, **TEST_RETRY_ENV}
    saved = {name: os.environ.get(name) for name in test_env}
    os.environ.update(test_env)
    started = not ray.is_initialized()
    if started:
        # Always a new local Ray: never a cluster some other process left running here.
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING
        )
    yield ray
    if started:
        ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
