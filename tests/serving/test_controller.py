"""The controller against a real registry and a real tritonserver: it loads what the desired
state names, keeps the last good version warm for the retention window, heals drift, and a
second pass does nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from demo_models import DemoModel, build_onnx_ctr
from gateway_fixtures import TOKEN

from modelops.artifacts import LocalArtifactStore
from modelops.registry import Registry
from modelops.spec import ModelClass, ModelSpec, VersionMeta
from serving.controller import Controller, TritonAdapter
from serving.triton.backend import RetentionPolicy, TritonBackend
from serving.triton.repo import triton_model_name
from serving.triton.server import TritonServer

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


def new_registry(tmp_path: Path, clock: Clock | None = None, **spec: str) -> Registry:
    """A registry with one model (spec fields as given), a dataset and an eval set."""
    reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}", clock=clock)
    reg.register_dataset("clicks", 1, "s3://b/clicks", kind="dataset")
    reg.register_dataset("clicks-eval", 1, "s3://b/eval", kind="eval_set")
    reg.add_team("ads")
    reg.create_model(
        ModelSpec.model_validate(
            {
                "owner_team": "ads",
                "rollback_class": "STATELESS",
                **spec,
                "policy": {"primary_metric": "ctr"},
            }
        )
    )
    return reg


@pytest.fixture
def setup(tmp_path: Path, server: TritonServer, onnx_models: list[DemoModel]):  # type: ignore[no-untyped-def]
    clock = Clock()
    reg = new_registry(
        tmp_path, clock, model_id="ctr", tier="L1", model_class="dnn", framework="onnx"
    )
    store = LocalArtifactStore(tmp_path / "artifacts")
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
        reg,
        {ModelClass.dnn: adapter},
        retention=RetentionPolicy(window_s=600, clock=clock),
        token=TOKEN,
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


def test_drift_names_what_a_pass_would_heal_and_does_nothing(setup, server: TritonServer) -> None:  # type: ignore[no-untyped-def]
    """`Controller.drift` reads desired against loaded: it loads nothing and records no pass,
    and a backend that does not answer is drift too, never an exception."""
    reg, ctl, triton, _ = setup
    assert ctl.drift() == []  # nothing desired yet
    reg.transition("ctr", 1, "PROMOTED", actor="a")
    missing = ["ctr/global: v1 (prod) is not loaded (ctr__v1)"]
    assert ctl.drift() == missing
    assert triton.loaded() == set() and ctl.status.passes == 0
    ctl.reconcile_once()
    assert ctl.drift() == []
    triton.unload("ctr__v1")  # behind the controller's back
    assert ctl.drift() == missing
    assert triton.loaded() == set()

    kill_hard(server)
    assert ctl.drift() == ["backend triton for dnn models is unreachable"]


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


def test_llm_versions_run_on_the_vllm_plane(tmp_path: Path) -> None:
    """The LLM plane, reconciled like the others. `vllm serve` needs a GPU, so the launcher
    here is the OpenAI-compatible stand-in written for the tests (tests/standins), which
    takes vLLM's real command line; the adapter and the HTTP protocol are the real ones."""
    import sys

    import httpx

    from serving.controller import VLLMAdapter

    standin = Path(__file__).resolve().parents[1] / "standins" / "openai_standin.py"
    reg = new_registry(
        tmp_path, model_id="chat", tier="L0", model_class="llm", framework="vllm_engine"
    )
    meta = VersionMeta.model_validate(
        {
            "runtime_requirements": {
                "gpu_class": "L4",
                "mem_gb": 20,
                "llm": {
                    "max_context_length": 64,
                    "kv_cache_gb_per_sequence": 0.5,
                    "tokenizer_version": "tok@r1",
                },
            }
        }
    )
    reg.register_version(
        "chat",
        weights_hash="c" * 64,
        weights_uri="s3://b/chat",
        training_run_id="r1",
        training_data="clicks@1",
        eval_set="clicks-eval@1",
        meta=meta,
    )
    reg.record_gate_result("chat", 1, passed=True, results={})
    reg.transition("chat", 1, "PROMOTED", actor="a")
    adapter = VLLMAdapter(launcher=(sys.executable, str(standin)), gpu_memory_gb=24)
    ctl = Controller(reg, {ModelClass.llm: adapter})
    try:
        acts = ctl.reconcile_once()
        assert [(a.kind, a.target) for a in acts] == [("load", "chat__v1")]
        assert ctl.reconcile_once() == []
        (table,) = ctl.snapshot.tables
        assert table.model_class == "llm" and table.prod.backend == "vllm"
        r = httpx.post(
            f"{table.prod.url}/v1/completions",
            json={"model": table.prod.backend_model, "prompt": "hello there", "max_tokens": 4},
            timeout=10,
        )
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 2
        reg.rollback("chat", actor="oncall")  # no earlier version: the slice has no prod
        acts = ctl.reconcile_once()
        assert ("unload", "chat__v1") in [(a.kind, a.target) for a in acts]
        assert adapter.present() == set()
    finally:
        for name in list(adapter._procs):
            adapter.remove(name)
        reg.close()


class GatewayProcess:
    """`modelops serve gateway` as a real process on a free port."""

    def __init__(self, workdir: Path) -> None:
        import os
        import subprocess
        import sys

        from serving.triton.server import free_port

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelops.cli", "serve", "gateway", "--port", str(self.port),
             "--state-file", str(workdir / "routes.json"), "--no-predlog"],
            stdout=open(workdir / "gateway.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
            env={**os.environ, "MODELOPS_HOME": str(workdir), "MODELOPS_GATEWAY_TOKEN": TOKEN},
            start_new_session=True,
        )  # fmt: skip
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (workdir / "gateway.log").read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/v2/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("gateway did not start")

    def stop(self) -> None:
        import os
        import signal

        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(15)


def served_version(gw: GatewayProcess, sample) -> int:  # type: ignore[no-untyped-def]
    import httpx

    body = {
        "inputs": [
            {
                "name": "features",
                "shape": list(sample.shape),
                "datatype": "FP32",
                "data": sample.ravel().tolist(),
            }
        ]
    }
    r = httpx.post(f"{gw.url}/v2/models/ctr/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return int(r.headers["x-modelops-version"])


def test_controller_pushes_tables_to_gateways_and_heals_a_restarted_one(
    setup,
    onnx_models,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    import tritonclient.http as th

    reg, ctl, _, _ = setup
    sample = onnx_models[0].sample[:2]
    gws = [GatewayProcess(tmp_path / f"gw{i}") for i in range(2)]
    try:
        ctl.gateways = [g.url for g in gws]
        reg.transition("ctr", 1, "PROMOTED", actor="a")
        acts = ctl.reconcile_once()
        assert sorted(a.kind for a in acts) == ["load", "push", "push"]
        assert [served_version(g, sample) for g in gws] == [1, 1]
        # an unmodified tritonclient, pointed at the gateway
        client = th.InferenceServerClient(gws[0].url.removeprefix("http://"))
        inp = th.InferInput("features", list(sample.shape), "FP32")
        inp.set_data_from_numpy(sample)
        got = client.infer("ctr", [inp]).as_numpy("probability")
        assert abs(got - onnx_models[0].predict(sample)).max() < 1e-5
        client.close()
        assert ctl.reconcile_once() == []  # gateways are current: nothing to push

        # promote v2 straight through the ladder; every gateway flips to it
        for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY", "PROMOTED"):
            reg.transition("ctr", 2, st, actor="a")
        ctl.reconcile_once()
        assert [served_version(g, sample) for g in gws] == [2, 2]

        # a gateway restarted with no state: the next pass sees it behind and pushes
        gws[1].stop()
        (tmp_path / "gw1" / "routes.json").unlink()
        gws[1] = GatewayProcess(tmp_path / "gw1")
        ctl.gateways = [g.url for g in gws]
        acts = ctl.reconcile_once()
        assert [(a.kind, a.target) for a in acts] == [("push", gws[1].url)]
        assert served_version(gws[1], sample) == 2
        assert ctl.reconcile_once() == []
    finally:
        for g in gws:
            g.stop()


def test_a_rolled_back_version_leaves_its_backend_only_after_the_gateways_left_it(
    setup,
    onnx_models,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Make before break: the push that routes away from a version comes before its unload,
    and while a gateway cannot be told, nothing it may still route to is unloaded."""
    reg, ctl, triton, _ = setup
    sample = onnx_models[0].sample[:2]
    gw = GatewayProcess(tmp_path / "gw")
    stopped = False
    try:
        ctl.gateways = [gw.url]
        reg.transition("ctr", 1, "PROMOTED", actor="a")
        for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY"):
            reg.transition("ctr", 2, st, actor="a")
        ctl.reconcile_once()
        assert triton.loaded() == names(1, 2)

        reg.rollback("ctr", actor="oncall", expected_version=2)
        acts = [(a.kind, a.target) for a in ctl.reconcile_once()]
        assert acts.index(("push", gw.url)) < acts.index(("unload", "ctr__v2")), acts
        assert triton.loaded() == names(1)
        assert served_version(gw, sample) == 1

        # a canary again, then a rollback while the only gateway is unreachable
        for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY"):
            reg.transition("ctr", 3, st, actor="a")
        ctl.reconcile_once()
        assert triton.loaded() == names(1, 3)
        gw.stop()
        stopped = True
        reg.rollback("ctr", actor="oncall", expected_version=3)
        kinds = [a.kind for a in ctl.reconcile_once()]
        assert "error" in kinds and "unload" not in kinds
        assert triton.loaded() == names(1, 3), "unloads wait until every gateway has the table"
        ctl.gateways = []
        ctl.reconcile_once()
        assert triton.loaded() == names(1)
    finally:
        if not stopped:
            gw.stop()


@pytest.mark.xdist_group("ray")
@pytest.mark.timeout(300)
def test_escape_hatch_versions_run_on_ray_serve(
    ray_session: None, tmp_path: Path, onnx_models: list[DemoModel]
) -> None:
    """An escape_hatch model is reconciled onto Ray Serve, one application per version."""
    import httpx

    from serving.controller import RayAdapter
    from serving.ray_backend import RayServeBackend

    reg = new_registry(
        tmp_path, model_id="odd", tier="L0", model_class="escape_hatch", framework="onnx"
    )
    store = LocalArtifactStore(tmp_path / "artifacts")
    demo = onnx_models[0]
    ref = store.put_file(demo.artifact)
    reg.register_version(
        "odd",
        weights_hash=ref.sha256,
        weights_uri=ref.uri,
        training_run_id="r1",
        training_data="clicks@1",
        eval_set="clicks-eval@1",
        meta=VersionMeta(signature=demo.signature),
    )
    reg.record_gate_result("odd", 1, passed=True, results={})
    reg.transition("odd", 1, "PROMOTED", actor="a")
    adapter = RayAdapter(RayServeBackend(store=store), store, tmp_path / "ray-cache")
    ctl = Controller(reg, {ModelClass.escape_hatch: adapter})
    try:
        acts = ctl.reconcile_once()
        assert [(a.kind, a.target) for a in acts] == [("load", "odd__v1")]
        assert ctl.reconcile_once() == []
        (table,) = ctl.snapshot.tables
        ep = table.prod
        assert ep.backend == "ray"
        sample = demo.sample[:4]
        body = {
            "inputs": [
                {
                    "name": "features",
                    "shape": list(sample.shape),
                    "datatype": "FP32",
                    "data": sample.ravel().tolist(),
                }
            ]
        }
        r = httpx.post(f"{ep.url}/v2/models/{ep.backend_model}/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
        out = {o["name"]: o for o in r.json()["outputs"]}["probability"]
        got = [float(x) for x in out["data"]]
        assert (
            max(abs(a - b) for a, b in zip(got, demo.predict(sample).ravel(), strict=True)) < 1e-5
        )
        reg.rollback("odd", actor="oncall")
        acts = ctl.reconcile_once()
        assert ("unload", "odd__v1") in [(a.kind, a.target) for a in acts]
        assert adapter.present() == set()
    finally:
        for name in adapter.present():
            adapter.remove(name)
        reg.close()


# ---------------------------------------------------------------------- route authority


def _foreign_backend(hits: list[str]):  # type: ignore[no-untyped-def]
    """A backend that is not ours: answers every inference and counts what it saw."""
    import json

    from gateway_fixtures import json_server

    def handler(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        hits.append(path)
        answer = {"model_name": "ctr", "model_version": "1", "outputs": []}
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()

    return json_server(handler)


def _hijack_table(url: str, generation: int):  # type: ignore[no-untyped-def]
    from gateway_fixtures import snapshot, table

    from serving.routing import BackendKind, Endpoint

    ep = Endpoint(version=1, backend=BackendKind.triton, url=url, backend_model="ctr__v1")
    return snapshot(table("ctr", ep, generation=generation))


def test_a_gateway_holding_a_table_the_controller_never_issued_is_taken_back(
    setup,
    onnx_models,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A token holder (or a stale state file) leaves the gateway on a foreign table with a
    generation far above the registry's. The controller must not be locked out: its next
    pass supersedes the table (one epoch higher), it says so, and a restarted gateway and
    a restarted controller keep agreeing."""
    import httpx
    from gateway_fixtures import AUTH

    reg, ctl, _, _ = setup
    sample = onnx_models[0].sample[:2]
    hits: list[str] = []
    gw = GatewayProcess(tmp_path / "gw")
    try:
        with _foreign_backend(hits) as evil:
            ctl.gateways = [gw.url]
            reg.transition("ctr", 1, "PROMOTED", actor="a")
            ctl.reconcile_once()
            assert served_version(gw, sample) == 1 and hits == []
            hijack = _hijack_table(evil, 10**9).model_dump(mode="json")
            r = httpx.put(f"{gw.url}/admin/routes", json=hijack, headers=AUTH)
            assert r.status_code == 200 and r.json()["applied"]
            served_version(gw, sample)
            assert hits, "the planted table routes prod to the foreign backend"

            acts = ctl.reconcile_once()
            assert [(a.kind, a.target) for a in acts] == [("push", gw.url)], acts
            assert "replaced a different table" in acts[0].detail
            n = len(hits)
            assert served_version(gw, sample) == 1 and len(hits) == n
            (held,) = httpx.get(f"{gw.url}/admin/routes", headers=AUTH).json()["tables"]
            assert held["prod"]["url"] == ctl.snapshot.tables[0].prod.url
            assert (held["epoch"], held["generation"]) == (1, 1)
            assert ctl.reconcile_once() == []

            # The same table survives in a stale state file: the restarted gateway serves it
            # until the next pass takes it back.
            gw.stop()
            (tmp_path / "gw" / "routes.json").write_text(
                _hijack_table(evil, 10**9).model_dump_json()
            )
            gw = GatewayProcess(tmp_path / "gw")
            served_version(gw, sample)
            assert len(hits) > n
            ctl.gateways = [gw.url]
            acts = ctl.reconcile_once()
            assert [(a.kind, a.target) for a in acts] == [("push", gw.url)], acts
            n = len(hits)
            assert served_version(gw, sample) == 1 and len(hits) == n
            gw.stop()
            gw = GatewayProcess(tmp_path / "gw")  # its state file now holds our table
            assert served_version(gw, sample) == 1 and len(hits) == n

            # A restarted controller remembers no epoch: it learns it from the gateway, so
            # its next table is still newer and is applied.
            fresh = Controller(
                reg, ctl.backends, gateways=[gw.url], retention=ctl.retention, token=TOKEN
            )
            for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY", "PROMOTED"):
                reg.transition("ctr", 2, st, actor="a")
            acts = fresh.reconcile_once()
            assert ("push", gw.url) in [(a.kind, a.target) for a in acts]
            assert not [a for a in acts if a.kind == "error"], acts
            assert served_version(gw, sample) == 2 and len(hits) == n
    finally:
        gw.stop()


def test_a_push_the_gateway_did_not_apply_is_an_error_and_a_stale_pass_overrides_nothing(
    setup,
    onnx_models,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Between the controller's read and its push, another pass lands a newer table: the
    compare-and-set refuses the push and the controller records an error, not a push. A
    pass whose view of the registry is stale does not supersede the newer table either."""
    from gateway_fixtures import ServerThread, make_app

    from serving.routing import RoutingSnapshot

    reg, ctl, _, _ = setup
    app = make_app(state_file=tmp_path / "routes.json")
    gw_store = app.state.gateway.store
    race: dict[str, object] = {}
    inner = app.build_middleware_stack

    def with_race():  # type: ignore[no-untyped-def]
        stack = inner()

        async def call(scope, receive, send):  # type: ignore[no-untyped-def]
            if scope["type"] == "http" and scope["method"] == "PUT" and race.get("table"):
                gw_store.apply(race.pop("table"))  # the concurrent pass wins the race
            await stack(scope, receive, send)

        return call

    app.build_middleware_stack = with_race
    with ServerThread(app) as gw:
        url = gw.http_url
        ctl.gateways = [url]
        reg.transition("ctr", 1, "PROMOTED", actor="a")
        ctl.reconcile_once()
        assert gw_store.generations() == {"ctr/global": 1}
        for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY"):
            reg.transition("ctr", 2, st, actor="a")
        newer = ctl.snapshot.tables[0].model_copy(update={"generation": 99})
        race["table"] = RoutingSnapshot(tables=[newer])
        acts = ctl.reconcile_once()
        errors = [a for a in acts if a.kind == "error"]
        assert [a.target for a in errors] == [url] and not [a for a in acts if a.kind == "push"]
        assert "push: not applied" in errors[0].detail and "expected" in errors[0].detail
        assert gw_store.generations() == {"ctr/global": 99}
        assert ctl.status.gateways[url] == {"ctr/global": 99}

        # A stale pass: the registry has moved past our snapshot, and the gateway holds a
        # table at the newer generation. Our older table must not supersede it.
        other = Controller(reg, ctl.backends, gateways=[url], retention=ctl.retention, token=TOKEN)
        reg.transition("ctr", 2, "PROMOTED", actor="a")
        other.reconcile_once()  # the up-to-date pass: prod v2 at the registry's generation
        (current,) = gw_store.tables()
        assert current.prod.version == 2
        acts = ctl._push_gateways(time.time())  # the old snapshot, pushed late
        assert acts == [] and gw_store.tables() == [current]


def test_route_pulls_need_the_token_and_answer_only_what_is_newer(setup, onnx_models) -> None:  # type: ignore[no-untyped-def]
    """`GET /v1/routes?gen=…` names what the gateway holds: the controller answers only
    newer tables, or 304 when there are none; without the token it answers nothing."""
    import asyncio

    import httpx
    from gateway_fixtures import AUTH, make_app, running, until

    from serving.controller import ControllerServer

    reg, ctl, _, _ = setup
    reg.transition("ctr", 1, "PROMOTED", actor="a")
    ctl.reconcile_once()
    (t,) = ctl.snapshot.tables
    g = t.generation
    server = ControllerServer(ctl).start()
    try:
        base = server.url
        for path in ("/v1/routes", f"/v1/routes?gen=ctr/global:{g}", "/v1/status"):
            for headers in ({}, {"authorization": "Bearer wrong-token-0123456789"}):
                r = httpx.get(base + path, headers=headers)
                assert r.status_code == 401 and list(r.json()) == ["error"], r.text
        r = httpx.post(f"{base}/v1/routes", headers=AUTH)
        assert r.status_code == 405
        assert httpx.post(f"{base}/v1/routes").status_code == 401

        def pull(*gens: str) -> httpx.Response:
            return httpx.get(f"{base}/v1/routes", params=[("gen", x) for x in gens], headers=AUTH)

        assert [x["generation"] for x in pull().json()["tables"]] == [g]
        assert [x["generation"] for x in pull(f"ctr/global:{g - 1}").json()["tables"]] == [g]
        assert [x["model_id"] for x in pull("other/global:5").json()["tables"]] == ["ctr"]
        for current in (f"ctr/global:{g}", f"ctr/global:{g}:0", f"ctr/global:{g - 1}:1"):
            r = pull(current)
            assert r.status_code == 304 and r.content == b"", current
        r = pull("ctr/global")
        assert r.status_code == 400 and "MODEL/SLICE:GENERATION" in r.json()["error"]
        assert httpx.get(f"{base}/v1/status", headers=AUTH).json()["passes"] == 1

        async def gateways() -> None:
            good = make_app(controller_url=base, pull_interval_s=0.05)
            bad = make_app(
                controller_url=base, pull_interval_s=0.05, token="not-the-token-0123456789"
            )
            async with running(good) as c, running(bad):
                store = good.state.gateway.store
                await until(lambda: store.generations() == {"ctr/global": g}, 10, "a pull")
                sample = onnx_models[0].sample[:2]
                body = {
                    "inputs": [
                        {
                            "name": "features",
                            "shape": list(sample.shape),
                            "datatype": "FP32",
                            "data": sample.ravel().tolist(),
                        }
                    ]
                }
                r = await c.post("/v2/models/ctr/infer", json=body)
                assert r.status_code == 200 and r.headers["x-modelops-version"] == "1"
                failures = bad.state.gateway.metrics.route_pull_failures
                await until(lambda: failures._value.get() >= 3, 10, "refused pulls")
                assert len(bad.state.gateway.store) == 0

        asyncio.run(gateways())
    finally:
        server.stop()


# ---------------------------------------------------------------------- a controller that stays up


def test_a_swapped_repository_copy_reloads_as_the_right_version(setup, onnx_models) -> None:  # type: ignore[no-untyped-def]
    """The incident: v1's model.onnx replaced by v2's bytes, manifest untouched, then v1
    reloaded (a drift heal, a Triton restart). The entry is rehashed against the registry's
    weights_hash before the load and rewritten from the store, so v1 answers as v1."""
    reg, ctl, triton, _ = setup
    reg.transition("ctr", 1, "PROMOTED", actor="a")
    ctl.reconcile_once()
    writer = ctl.backends[ModelClass.dnn].writer
    v2 = reg.get_version("ctr", 2)
    copy = writer.root / "ctr__v1" / "1" / "model.onnx"
    copy.write_bytes(writer.store.read_bytes(v2.weights_hash))
    triton.unload("ctr__v1")  # behind the controller's back; the next pass reloads it
    assert [(a.kind, a.target) for a in ctl.reconcile_once()] == [("load", "ctr__v1")]
    sample = onnx_models[0].sample
    got = triton.infer("ctr__v1", {"features": sample})["probability"]
    assert abs(got - onnx_models[0].predict(sample)).max() < 1e-5
    assert abs(got - onnx_models[1].predict(sample)).max() > 1e-3


def test_pass_backoff_is_bounded_exponential_with_jitter_and_resets() -> None:
    """The loop's wait: base after a clean pass; after the k-th failed pass in a row, a draw
    in [d/2, d] with d = min(cap, base * 2**(k-1)); a clean pass resets it."""
    import random

    from serving.controller import PassBackoff

    b = PassBackoff(base_s=0.5, cap_s=5.0, rng=random.Random(7))
    assert b.next_delay(failed=False) == 0.5
    for k in range(1, 40):
        d = min(5.0, 0.5 * 2 ** (k - 1))
        assert d / 2 <= b.next_delay(failed=True) <= d
    assert b.next_delay(failed=False) == 0.5 and b.failures == 0
    assert 0.25 <= b.next_delay(failed=True) <= 0.5  # starts over after the reset
    # Controllers that failed together spread out instead of retrying in lockstep.
    at_cap = []
    for seed in range(200):
        c = PassBackoff(base_s=0.5, cap_s=5.0, rng=random.Random(seed))
        for _ in range(10):
            delay = c.next_delay(failed=True)
        at_cap.append(delay)
    assert min(at_cap) < 2.75 and max(at_cap) > 4.75 and len(set(at_cap)) == 200


def kill_hard(server: TritonServer) -> None:
    """`kill -9` of Triton and its backend stubs, as a crashed container would leave it."""
    import os
    import signal

    proc = server._proc
    assert proc is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    server._proc = None


def test_a_pass_survives_a_dead_backend_and_keeps_its_routing(setup, server: TritonServer) -> None:  # type: ignore[no-untyped-def]
    """Triton killed: the pass records the failure instead of raising, publishes the table it
    had (gateways keep routing; the breaker and 503s cover the gap) and unloads nothing; once
    Triton is back on the same ports and repository, the next pass loads prod again."""
    reg, ctl, _, _ = setup
    reg.transition("ctr", 1, "PROMOTED", actor="a")
    ctl.reconcile_once()
    (before,) = ctl.snapshot.tables

    kill_hard(server)
    acts = ctl.reconcile_once()  # raised BackendUnavailable before: the loop died with it
    assert [(a.kind, a.target) for a in acts] == [("error", "ctr__v1")]
    assert "unreachable" in acts[0].detail
    assert ctl.snapshot.tables == [before]  # the routing stays as it was
    assert ctl.status.consecutive_error_passes == 1 and ctl.status.error_passes == 1
    assert "unreachable" in ctl.status.backends["dnn"]
    (st,) = ctl.status.slices
    assert st.errors and st.routed_generation == before.generation
    ctl.reconcile_once()
    assert ctl.status.consecutive_error_passes == 2

    server.start()
    acts = ctl.reconcile_once()
    assert [(a.kind, a.target) for a in acts] == [("load", "ctr__v1")]
    assert ctl.status.consecutive_error_passes == 0 and ctl.status.error_passes == 2
    assert ctl.status.backends == {"dnn": "ok"}
    assert TritonBackend(server.url).is_ready("ctr__v1")
    assert ctl.snapshot.tables == [before]
    assert ctl.reconcile_once() == []


def test_a_dead_backend_does_not_stop_the_others(tmp_path: Path, server: TritonServer) -> None:
    """One pass over two planes: Triton dead, the LLM plane (the OpenAI stand-in launched with
    vLLM's command line, as in the vLLM test above) still reconciled and routed."""
    import sys

    from serving.controller import VLLMAdapter

    reg = new_registry(tmp_path, model_id="ctr", tier="L0", model_class="dnn", framework="onnx")
    reg.create_model(
        ModelSpec.model_validate(
            {
                "model_id": "chat",
                "owner_team": "ads",
                "rollback_class": "STATELESS",
                "tier": "L0",
                "model_class": "llm",
                "framework": "vllm_engine",
                "policy": {"primary_metric": "ctr"},
            }
        )
    )
    meta = VersionMeta.model_validate(
        {
            "runtime_requirements": {
                "gpu_class": "L4",
                "mem_gb": 20,
                "llm": {
                    "max_context_length": 64,
                    "kv_cache_gb_per_sequence": 0.5,
                    "tokenizer_version": "tok@r1",
                },
            }
        }
    )
    for model_id, m in (("ctr", VersionMeta()), ("chat", meta)):
        reg.register_version(
            model_id,
            weights_hash=("c" if model_id == "chat" else "d") * 64,
            weights_uri="s3://b/w",
            training_run_id="r1",
            training_data="clicks@1",
            eval_set="clicks-eval@1",
            meta=m,
        )
        reg.record_gate_result(model_id, 1, passed=True, results={})
        reg.transition(model_id, 1, "PROMOTED", actor="a")
    standin = Path(__file__).resolve().parents[1] / "standins" / "openai_standin.py"
    vllm = VLLMAdapter(launcher=(sys.executable, str(standin)), gpu_memory_gb=24)
    triton = TritonAdapter(server.url, server.repository, LocalArtifactStore(tmp_path / "a"))
    ctl = Controller(reg, {ModelClass.dnn: triton, ModelClass.llm: vllm})
    kill_hard(server)
    try:
        acts = ctl.reconcile_once()
        assert ("load", "chat__v1") in [(a.kind, a.target) for a in acts]
        assert [a.target for a in acts if a.kind == "error"] == ["ctr__v1"]
        assert [t.model_id for t in ctl.snapshot.tables] == ["chat"]
        assert ctl.status.backends["llm"] == "ok" and "unreachable" in ctl.status.backends["dnn"]
    finally:
        for name in list(vllm._procs):
            vllm.remove(name)
        reg.close()
        server.start()


@pytest.mark.timeout(600)
def test_controller_run_outlives_a_killed_triton(tmp_path: Path, onnx_models) -> None:  # type: ignore[no-untyped-def]
    """The incident, replayed with real processes: `modelops controller run`, a real Triton,
    a real gateway, client threads sending through it. Triton is killed with `kill -9` and
    restarted on the same ports and repository; traffic must come back with no human, the
    controller process must never exit, and the gateway must answer the gap cleanly. How
    long recovery takes is measured by bench/recovery.py, not asserted here."""
    from recovery_scenario import Scenario

    sc = Scenario(tmp_path / "scenario", onnx_models[0]).start()
    try:
        t = sc.outage()
        assert sc.controller_alive(), sc.log("controller.log")
        assert sc.load is not None
        gap = [s for s in sc.load.since(t["killed"]) if s.sent < t["first_good_sent"]]
        failed = [s for s in gap if s.status != 200]
        assert failed, "no request met the outage"
        # The gateway answers the gap as a backend outage: 503/504 with Retry-After.
        assert {s.status for s in failed} <= {503, 504}, {s.status for s in failed}
        assert all(s.retry_after for s in failed)
        after = sc.load.since(t["first_good_sent"])
        assert after and all(s.version == "1" for s in after if s.status == 200)
        status = sc.status()
        assert status["error_passes"] >= 1
        sc.wait_until(lambda: sc.status()["consecutive_error_passes"] == 0, "a clean pass")
        assert sc.status()["backends"] == {"dnn": "ok"}
        assert any("unreachable" in a for a in _pass_errors(sc)), sc.log("controller.log")
        # A second outage on the same controller process: it recovers again.
        sc.outage()
        assert sc.controller_alive(), sc.log("controller.log")
    finally:
        sc.stop()
    assert sc.controller is not None and sc.controller.returncode in (0, -15)


def _pass_errors(sc) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        line
        for line in sc.log("controller.log", tail=200_000).splitlines()
        if line.startswith("error")
    ]
