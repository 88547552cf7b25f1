"""Fixtures for the Dagster plugin: a throwaway MODELOPS_HOME, the demo fleet, real Triton."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelops.fleet import Fleet, load_fleet

ROOT = Path(__file__).resolve().parents[2]
DEMO_FLEET = ROOT / "demo" / "fleet.yaml"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty embedded home; every resource's default points inside it."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("MODELOPS_HOME", str(h))
    for var in (
        "MODELOPS_REGISTRY_URL",
        "MODELOPS_ARTIFACTS",
        "MODELOPS_PREDLOG_URL",
        "MODELOPS_SCHEMAS",
        "MODELOPS_GATEWAYS",
        "MODELOPS_TRITON_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    return h


@pytest.fixture(scope="session")
def demo_fleet() -> Fleet:
    return load_fleet(DEMO_FLEET)


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real tritonserver (explicit model control) with an empty repository.

    Tests that use it share one server per xdist worker; give each test its own model names.
    It is not the serving suite's server on purpose: controller passes here unload every
    managed name their registry does not need, which would pull models from under those tests.
    """
    from serving.triton.server import TritonServer

    root = tmp_path_factory.mktemp("triton")
    server = TritonServer(root / "repository", log_path=root / "triton.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
