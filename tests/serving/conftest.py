"""Serving-plane fixtures: real processes, shared per test session.

Triton starts in well under a second, so each xdist worker has its own. Ray takes seconds
to start, so every Ray test is grouped onto one worker (`xdist_group("ray")`) and shares
one local Ray for the whole session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.triton.server import TritonServer


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A real tritonserver (explicit model control) on free ports, with an empty repository."""
    root = tmp_path_factory.mktemp("triton")
    server = TritonServer(root / "repository", log_path=root / "triton.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray (and Serve) for the session; tests using it must be in xdist_group ray."""
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    serve.start(http_options={"host": "127.0.0.1", "port": _free_port()})
    try:
        yield None
    finally:
        serve.shutdown()
        ray.shutdown()


def _free_port() -> int:
    from serving.triton.server import free_port

    return free_port()


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    return tmp_path / "repo"


def pytest_configure(config: pytest.Config) -> None:
    """Serving tests import the shared model builders as `demo_models`."""
    import sys

    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
