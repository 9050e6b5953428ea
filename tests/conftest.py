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


# Fixtures whose tests run Ray in this process (or a server beside it): integration tests.
RAY_FIXTURES = frozenset({"ray_local", "s3_endpoint"})
# The pytest-xdist groups of the integration tests. Each group runs on one worker, one test
# after the other, while the other workers take the unit and golden tests: "ray" holds the
# modules whose tests use the session's Ray (so it starts once, and two never run in one
# process), "jobs" the modules whose tests only run jobs as subprocesses. A module may name
# its group itself (`pytestmark = pytest.mark.xdist_group(...)`) to even out the two.
IN_PROCESS_RAY_GROUP = "ray"
JOB_GROUP = "jobs"


@pytest.hookimpl(tryfirst=True)  # Before xdist reads the groups.
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tags each test by what it reaches through its fixtures, and groups integration tests.

    A test that reads the golden vectors is `golden`; one that needs the session's Ray is
    `integration`. A module's integration tests stay in one group, so that its module-scoped
    set-up is paid once.
    """
    with_ray = set()
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "golden_dir" in fixtures:
            item.add_marker(pytest.mark.golden)
        if fixtures & RAY_FIXTURES:
            item.add_marker(pytest.mark.integration)
            with_ray.add(item.path)
    for item in items:
        if item.get_closest_marker("integration") and not item.get_closest_marker("xdist_group"):
            group = IN_PROCESS_RAY_GROUP if item.path in with_ray else JOB_GROUP
            item.add_marker(pytest.mark.xdist_group(group))


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
