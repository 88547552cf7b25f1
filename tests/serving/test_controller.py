"""The controller against a real registry and a real tritonserver: it loads what the desired
state names, keeps the last good version warm for the retention window, heals drift, and a
second pass does nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from demo_models import DemoModel, build_onnx_ctr

from modelops.artifacts import LocalArtifactStore
from modelops.registry import Registry
from modelops.spec import ModelClass, ModelSpec, VersionMeta
from serving.controller import Controller, TritonAdapter
from serving.triton_backend import RetentionPolicy, TritonBackend
from serving.triton_repo import triton_model_name
from serving.triton_server import TritonServer

pytestmark = pytest.mark.timeout(240)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> list[DemoModel]:
    root = tmp_path_factory.mktemp("ctl-models")
    return [build_onnx_ctr(root / f"s{seed}", seed=seed) for seed in (0, 1, 2)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TritonServer]:
    """A Triton of this test's own, so restarting it cannot disturb other tests."""
    s = TritonServer(tmp_path / "repository", log_path=tmp_path / "triton.log").start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def setup(tmp_path: Path, server: TritonServer, onnx_models: list[DemoModel]):  # type: ignore[no-untyped-def]
    clock = Clock()
    reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}", clock=clock)
    store = LocalArtifactStore(tmp_path / "artifacts")
    reg.register_dataset("clicks", 1, "s3://b/clicks", kind="dataset")
    reg.register_dataset("clicks-eval", 1, "s3://b/eval", kind="eval_set")
    reg.create_model(
        ModelSpec(
            model_id="ctr",
            owner_team="ads",
            tier="L1",
            rollback_class="STATELESS",
            model_class="dnn",
            framework="onnx",
            policy={"primary_metric": "ctr"},
        )
    )
    for i, m in enumerate(onnx_models, start=1):
        ref = store.put_file(m.artifact)
        reg.register_version(
            "ctr",
            weights_hash=ref.sha256,
            weights_uri=ref.uri,
            training_run_id=f"run-{i}",
            training_data="clicks@1",
            eval_set="clicks-eval@1",
            meta=VersionMeta(signature=m.signature),
        )
        reg.record_gate_result("ctr", i, passed=True, results={})
    adapter = TritonAdapter(server.url, server.repository, store, contracts=reg.get_contract)
    ctl = Controller(
        reg, {ModelClass.dnn: adapter}, retention=RetentionPolicy(window_s=600, clock=clock)
    )
    yield reg, ctl, TritonBackend(server.url), clock
    reg.close()


def names(*versions: int) -> set[str]:
    return {triton_model_name("ctr", v) for v in versions}


def test_reconcile_follows_the_lifecycle(setup, onnx_models) -> None:  # type: ignore[no-untyped-def]
    reg, ctl, triton, clock = setup
    assert ctl.reconcile_once() == []  # nothing desired yet, nothing done
    reg.transition("ctr", 1, "PROMOTED", actor="a")
    acts = ctl.reconcile_once()
    assert [(a.kind, a.target) for a in acts] == [("load", "ctr__v1")]
    assert triton.loaded() == names(1)
    assert ctl.reconcile_once() == []  # idempotent
    (table,) = ctl.snapshot.tables
    assert table.prod.backend_model == "ctr__v1" and table.generation == 1
    # the loaded model answers like the in-process one
    sample = onnx_models[0].sample
    out = triton.infer("ctr__v1", {"features": sample})
    assert abs(out["probability"] - onnx_models[0].predict(sample)).max() < 1e-5

    for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY"):
        reg.transition("ctr", 2, st, actor="a")
    ctl.reconcile_once()
    assert triton.loaded() == names(1, 2)
    (table,) = ctl.snapshot.tables
    assert table.canary.endpoint.version == 2 and table.canary.percent == 1
    assert table.shadow is None  # v2 left SHADOW for CANARY

    reg.transition("ctr", 2, "PROMOTED", actor="a")
    ctl.reconcile_once()
    assert triton.loaded() == names(1, 2), "the previous prod stays warm after promotion"
    (table,) = ctl.snapshot.tables
    assert table.prod.version == 2 and table.fallback.version == 1
    clock.now += timedelta(seconds=601)
    acts = ctl.reconcile_once()
    assert ("unload", "ctr__v1") in [(a.kind, a.target) for a in acts]
    assert triton.loaded() == names(2)
    assert ctl.reconcile_once() == []

    # a rollback after the window needs a load; the table flips once v1 is ready
    reg.rollback("ctr", actor="oncall")
    ctl.reconcile_once()
    assert triton.loaded() == names(1)
    assert ctl.snapshot.tables[0].prod.version == 1


def test_drift_is_healed(setup, server: TritonServer) -> None:  # type: ignore[no-untyped-def]
    reg, ctl, triton, _ = setup
    reg.transition("ctr", 1, "PROMOTED", actor="a")
    ctl.reconcile_once()
    triton.unload("ctr__v1")  # behind the controller's back
    assert triton.loaded() == set()
    acts = ctl.reconcile_once()
    assert [(a.kind, a.target) for a in acts] == [("load", "ctr__v1")]
    assert triton.is_ready("ctr__v1")

    # a backend that restarts empty: same ports, nothing loaded
    server.stop()
    server.start()
    assert TritonBackend(server.url).loaded() == set()
    acts = ctl.reconcile_once()
    assert [(a.kind, a.target) for a in acts] == [("load", "ctr__v1")]
    assert TritonBackend(server.url).is_ready("ctr__v1")
    assert ctl.reconcile_once() == []


def test_a_version_that_cannot_load_is_never_routed(setup) -> None:  # type: ignore[no-untyped-def]
    reg, ctl, triton, _ = setup
    reg.transition("ctr", 1, "PROMOTED", actor="a")
    ctl.reconcile_once()
    # v2's blob is tampered with in the store: invariant 6 refuses it before Triton sees it
    v2 = reg.get_version("ctr", 2)
    blob = ctl.backends[ModelClass.dnn].writer.store.path_for(v2.weights_hash)
    blob.chmod(0o644)
    blob.write_bytes(b"not the model")
    for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY"):
        reg.transition("ctr", 2, st, actor="a")
    acts = ctl.reconcile_once()
    assert any(a.kind == "error" and "ctr__v2" in a.target for a in acts)
    (table,) = ctl.snapshot.tables
    assert table.prod.version == 1 and table.canary is None
    assert triton.loaded() == names(1)
    status = {(s.model_id, s.slice): s for s in ctl.status.slices}
    assert "sha256" in status[("ctr", "global")].errors[0]
