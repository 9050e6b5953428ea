"""Fixtures for the prepare-stage tests: scratch space and a loopback S3 server.

The session's local Ray is `ray_local` in tests/conftest.py (shared with tests/jobs).
"""

from __future__ import annotations

import os

import pytest

from tests.conftest import TEST_AWS_ENV


@pytest.fixture
def scratch(tmp_path) -> str:
    """Local scratch directory for spools and shards in progress."""
    path = tmp_path / "scratch"
    path.mkdir()
    return str(path)


@pytest.fixture(scope="session")
def s3_endpoint(ray_local) -> str:
    """A real S3 API (moto's server mode) on a free loopback port; returns its URL.

    Depends on `ray_local` so the dummy AWS credentials are in the environment before Ray
    starts its workers.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert all(os.environ.get(k) == v for k, v in TEST_AWS_ENV.items())
    yield f"http://{host}:{port}"
    server.stop()
