"""Resources: zero-config embedded defaults, secrets through EnvVar, and a serialized controller."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from modelops.errors import ConflictError
from resources import ControllerResource, RegistryResource, default_resources


def test_embedded_defaults_need_no_configuration(home: Path) -> None:
    res = default_resources()
    assert set(res) == {
        "registry",
        "artifacts",
        "feature_schemas",
        "predlog",
        "triton",
        "ray_serve",
        "vllm",
        "controller",
    }
    reg = res["registry"].get()  # type: ignore[attr-defined]
    assert reg.list_models() == []
    assert (home / "registry.db").exists()
    ref = res["artifacts"].get().put_bytes(b"weights")  # type: ignore[attr-defined]
    assert Path(ref.uri.removeprefix("file://")).is_relative_to(home / "artifacts")
    assert res["feature_schemas"].source().directory == home / "schemas"  # type: ignore[attr-defined]
    assert res["triton"].repository_path() == home / "triton-repo"  # type: ignore[attr-defined]


def test_secrets_arrive_as_env_vars_not_literals(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{home / 'other.db'}"
    monkeypatch.setenv("MODELOPS_REGISTRY_URL", url)
    monkeypatch.setenv("VLLM_API_KEY", "s3cret")
    res = default_resources()

    @dg.op
    def read(registry: RegistryResource) -> str:
        return str(registry.url)

    @dg.job
    def probe() -> None:
        read()

    defs = dg.Definitions(jobs=[probe], resources=res)
    result = defs.get_job_def("probe").execute_in_process()
    assert result.output_for_node("read") == url
    # The definitions hold the variable's name, never its value.
    assert "s3cret" not in repr(res["vllm"])
    assert "other.db" not in repr(res["registry"])


def test_controller_passes_serialize_on_the_lock(home: Path) -> None:
    ctl = ControllerResource(lock_timeout_s=0.3)
    order: list[str] = []

    def hold() -> None:
        with ctl.locked():
            order.append("a-in")
            time.sleep(0.6)
            order.append("a-out")

    t = threading.Thread(target=hold)
    t.start()
    while not order:
        time.sleep(0.01)
    with pytest.raises(ConflictError, match="controller lock .* held for over"):
        with ctl.locked():
            order.append("b-in")
    t.join()
    with ctl.locked():
        order.append("c-in")
    assert order == ["a-in", "a-out", "c-in"]
