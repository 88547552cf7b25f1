"""The action jobs, run in process against a real registry, a real Triton and (once) a real
gateway: each job moves the registry, moves the traffic in the same run, and says so."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import numpy as np
import pytest

from jobs import ACTION_JOBS, ActionConfig, build_job_defs, reconcile_job
from modelops.actions import (
    JOB_NAMES,
    LOCK_TAG,
    OP_NAMES,
    ActionKind,
    ActionRequest,
    action_run_key,
    run_config_for,
)
from modelops.artifacts import open_store
from modelops.fleet import Fleet
from modelops.registry import Registry
from modelops.spec import ModelSpec, VersionMeta
from resources import (
    ArtifactStoreResource,
    ControllerResource,
    RegistryResource,
    default_resources,
)
from sensors import action_run_request

SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "dims": [8]}],
    "outputs": [{"name": "probability", "datatype": "FP32", "dims": [1]}],
}


# ---------------------------------------------------------------------- helpers


def tiny_onnx(path: Path, seed: int) -> Path:
    """A logistic model, features [n, 8] -> probability [n, 1]; the seed changes its bytes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(8, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.array([0.1 * seed], dtype=np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["z0"]),
            helper.make_node("Add", ["z0", "b"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["probability"]),
        ],
        "ctr",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 8])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])],
        initializer=[w, b],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return path


def new_model(home: Path, *, versions: int = 3, tier: str = "L1") -> tuple[Registry, str]:
    """A model with a unique id (the Triton server is shared) and N gated versions."""
    reg = Registry(f"sqlite:///{home / 'registry.db'}")
    mid = f"ctr_{uuid.uuid4().hex[:8]}"
    reg.register_dataset("clicks", 1, "s3://b/clicks", kind="dataset")
    reg.register_dataset("clicks-eval", 1, "s3://b/eval", kind="eval_set")
    reg.add_team("ads")
    reg.create_model(
        ModelSpec.model_validate(
            {
                "model_id": mid,
                "owner_team": "ads",
                "tier": tier,
                "rollback_class": "STATELESS",
                "model_class": "dnn",
                "framework": "onnx",
                "policy": {"primary_metric": "ctr"},
            }
        )
    )
    store = open_store(str(home / "artifacts"))
    for i in range(1, versions + 1):
        reg.register_weights(
            mid,
            tiny_onnx(home / "build" / f"{mid}-{i}.onnx", seed=i),
            store=store,
            training_run_id=f"run-{i}",
            training_data="clicks@1",
            eval_set="clicks-eval@1",
            meta=VersionMeta(signature=SIGNATURE),
        )
        reg.record_gate_result(mid, i, passed=True, results={})
    return reg, mid


def resources(triton: Any | None, gateways: list[str] | None = None) -> dict[str, Any]:
    ctl = (
        ControllerResource(
            triton_url=triton.url,
            repository=str(triton.repository),
            gateways=gateways or [],
            lock_timeout_s=30,
        )
        if triton is not None
        else ControllerResource(triton_url="127.0.0.1:9", lock_timeout_s=5)
    )
    return {"registry": RegistryResource(), "artifacts": ArtifactStoreResource(), "controller": ctl}


def run(
    action: ActionKind, res: dict[str, Any], **req: Any
) -> tuple[dg.ExecuteInProcessResult, ActionRequest]:
    r = ActionRequest(**req)
    instance = dg.DagsterInstance.ephemeral()
    result = ACTION_JOBS[action].execute_in_process(
        run_config=run_config_for(action, r),
        resources=res,
        instance=instance,
        raise_on_error=False,
        tags=action_run_request(action, r).tags,
    )
    result.dagster_run_logs = instance.all_logs(result.run_id)  # type: ignore[attr-defined]
    return result, r


def observation(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    (obs,) = [
        e.event_specific_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    return {k: v.value for k, v in obs.metadata.items()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    (ev,) = result.get_step_failure_events()
    return ev.step_failure_data.user_failure_data.description


def state(reg: Registry, mid: str, v: int) -> tuple[str, int | None]:
    mv = reg.get_version(mid, v)
    return mv.state["global"].value, mv.canary_percent.get("global")


def loaded(triton: Any) -> set[str]:
    from serving.triton.backend import TritonBackend

    return TritonBackend(triton.url).loaded()


# ---------------------------------------------------------------------- the lifecycle


@pytest.mark.xdist_group("triton")
def test_lifecycle_moves_registry_and_traffic(home: Path, triton: Any) -> None:
    reg, mid = new_model(home)
    res = resources(triton)

    # bootstrap: the first version goes straight to prod, and Triton loads it in the same run
    result, _ = run(ActionKind.promote, res, model_id=mid, version=1, expected="OFFLINE_PASSED")
    assert result.success
    assert state(reg, mid, 1) == ("PROMOTED", None)
    assert f"{mid}__v1" in loaded(triton)
    obs = observation(result)
    assert obs["state/global"] == "PROMOTED" and obs["version"] == 1
    assert obs["action"] == "promote" and obs["routing/global"] == "prod v1"

    result, _ = run(
        ActionKind.start_shadow, res, model_id=mid, version=2, expected="OFFLINE_PASSED"
    )
    assert result.success
    assert state(reg, mid, 2)[0] == "SHADOW"
    assert {f"{mid}__v1", f"{mid}__v2"} <= loaded(triton)
    assert observation(result)["state/global"] == "SHADOW 100%"

    result, _ = run(
        ActionKind.canary_step, res, model_id=mid, version=2, expected="SHADOW", percent=1
    )
    assert result.success and state(reg, mid, 2) == ("CANARY", 1)
    for before, after in ((1, 5), (5, 10)):
        result, _ = run(
            ActionKind.canary_step,
            res,
            model_id=mid,
            version=2,
            expected="CANARY",
            expected_percent=before,
            percent=after,
        )
        assert result.success, failure_message(result)
        assert state(reg, mid, 2) == ("CANARY", after)
        assert observation(result)["state/global"] == f"CANARY {after}%"
        assert observation(result)["routing/global"] == f"prod v1, canary v2 {after}%"

    result, _ = run(ActionKind.promote, res, model_id=mid, version=2, expected="CANARY")
    assert result.success
    assert state(reg, mid, 2) == ("PROMOTED", None)
    assert state(reg, mid, 1) == ("DEPRECATED", None)
    obs = observation(result)
    assert obs["deprecated_version"] == 1
    assert obs["routing/global"] == "prod v2, rollback target v1"

    # rollback: the registry restores the last good version, the controller routes it
    result, _ = run(ActionKind.rollback, res, model_id=mid, version=2, expected="PROMOTED")
    assert result.success
    assert state(reg, mid, 2) == ("ROLLED_BACK", None)
    assert state(reg, mid, 1) == ("PROMOTED", None)
    assert observation(result)["restored_version"] == 1
    assert reg.desired_state(mid).prod_version == 1
    assert f"{mid}__v1" in loaded(triton)
    # the run reads as what happened: the registry move, the restore, the traffic
    logs = [e.user_message for e in result.dagster_run_logs]
    assert any(f"{mid}@2 PROMOTED -> ROLLED_BACK" in m for m in logs), logs
    assert "registry: v1 restored to PROMOTED" in logs
    assert any(m.startswith("controller: ") for m in logs)
    rollbacks = [e for e in reg.audit_entries(mid) if e.action == "rollback"]
    assert rollbacks and rollbacks[-1].payload["restored"] == 1
    assert rollbacks[-1].payload["automated"] is True
    assert reg.verify_audit(mid).ok

    # a reconcile run afterwards finds nothing to do
    result = reconcile_job.execute_in_process(
        resources=res, instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success


# ---------------------------------------------------------------------- refusals


def test_illegal_transition_fails_with_one_line_and_no_rows(home: Path) -> None:
    reg, mid = new_model(home, versions=1)
    before = reg.row_counts()
    # v1 is OFFLINE_PASSED with no prod on the slice: a canary has nothing to compare against
    result, _ = run(ActionKind.canary_step, resources(None), model_id=mid, version=1, percent=1)
    assert not result.success
    msg = failure_message(result)
    assert "\n" not in msg
    assert "not allowed" in msg and "legal next states" in msg, msg
    assert reg.row_counts() == before
    assert state(reg, mid, 1) == ("OFFLINE_PASSED", None)


def test_stale_expected_state_is_a_clean_conflict(home: Path) -> None:
    reg, mid = new_model(home, versions=1)
    before = reg.row_counts()
    result, _ = run(ActionKind.promote, resources(None), model_id=mid, version=1, expected="CANARY")
    assert not result.success
    msg = failure_message(result)
    assert msg.startswith("conflict:") and "\n" not in msg, msg
    assert "not CANARY as expected" in msg
    assert reg.row_counts() == before


def test_a_refused_second_step_says_what_was_committed(home: Path) -> None:
    reg, mid = new_model(home, versions=3)
    reg.transition(mid, 1, "PROMOTED", actor="oncall")
    for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY"):
        reg.transition(mid, 2, st, actor="oncall")
    for st in ("APPROVED_SHADOW", "SHADOW"):
        reg.transition(mid, 3, st, actor="oncall")
    # a bad percent is refused before anything commits
    before = reg.row_counts()
    result, _ = run(ActionKind.canary_step, resources(None), model_id=mid, version=3, percent=50)
    assert failure_message(result) == "canary_step percent 50 is out of range; allowed 1..10"
    assert reg.row_counts() == before
    # v3 may be approved for canary, but v2 holds the canary: the second step is refused
    result, _ = run(ActionKind.canary_step, resources(None), model_id=mid, version=3, percent=1)
    assert not result.success
    msg = failure_message(result)
    assert "\n" not in msg and "version 2 is already in CANARY" in msg, msg
    assert "already committed: SHADOW -> APPROVED_CANARY; a re-run resumes" in msg, msg
    assert state(reg, mid, 3) == ("APPROVED_CANARY", None)


@pytest.mark.xdist_group("triton")
def test_start_shadow_resumes_from_a_human_approval(home: Path, triton: Any) -> None:
    reg, mid = new_model(home, versions=2)
    reg.transition(mid, 1, "PROMOTED", actor="oncall")
    reg.transition(mid, 2, "APPROVED_SHADOW", actor="oncall")
    result, _ = run(ActionKind.start_shadow, resources(triton), model_id=mid, version=2)
    assert result.success, failure_message(result)
    assert state(reg, mid, 2)[0] == "SHADOW"
    assert {f"{mid}__v1", f"{mid}__v2"} <= loaded(triton)


def test_invalid_config_is_one_line(home: Path) -> None:
    result, _ = run(ActionKind.promote, resources(None), model_id="m", version=1)
    bad = ACTION_JOBS[ActionKind.promote].execute_in_process(
        run_config={
            "ops": {OP_NAMES[ActionKind.promote]: {"config": {"model_id": "m", "version": 0}}}
        },
        resources=resources(None),
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not bad.success
    assert failure_message(bad).startswith("invalid promote config: version:")
    assert "unknown model 'm'" in failure_message(result)


def test_transition_job_needs_a_target(home: Path) -> None:
    reg, mid = new_model(home, versions=1)
    result, _ = run(ActionKind.transition, resources(None), model_id=mid, version=1)
    assert not result.success
    msg = failure_message(result)
    assert "config.target" in msg and "PROMOTED" in msg
    # and with a target it is the generic move (no traffic state: the controller is not
    # needed to change anything, but the pass still runs; an unreachable Triton fails it)
    result, _ = run(
        ActionKind.transition, resources(None), model_id=mid, version=1, target="ARCHIVED"
    )
    assert state(reg, mid, 1) == ("ARCHIVED", None)


def test_unreachable_serving_plane_fails_the_run_after_the_registry_moved(home: Path) -> None:
    reg, mid = new_model(home, versions=1)
    result, _ = run(ActionKind.promote, resources(None), model_id=mid, version=1)
    assert not result.success
    assert state(reg, mid, 1) == ("PROMOTED", None)  # committed; the reconcile sensor heals
    assert "serving plane did not follow" in failure_message(result)


# ---------------------------------------------------------------------- contract


def test_run_requests_are_deterministic_and_locked_per_slice() -> None:
    req = ActionRequest(
        model_id="ctr", version=3, expected="CANARY", expected_percent=1, percent=5, reason="ok"
    )
    a = action_run_request(ActionKind.canary_step, req)
    b = action_run_request(ActionKind.canary_step, req.model_copy(update={"reason": "again"}))
    assert a.run_key == b.run_key == action_run_key(ActionKind.canary_step, req)
    assert a.tags[LOCK_TAG] == "ctr/global"
    assert a.job_name == JOB_NAMES[ActionKind.canary_step] == "modelops_canary_step"
    other = action_run_request(
        ActionKind.canary_step, req.model_copy(update={"expected_percent": 5})
    )
    assert other.run_key != a.run_key
    assert a.run_config == {"ops": {OP_NAMES[ActionKind.canary_step]: {"config": req.model_dump()}}}
    # the op config and the request are the same contract
    assert set(ActionConfig.model_fields) == set(ActionRequest.model_fields)


def test_job_defs_and_refresh_schedules(demo_fleet: Fleet) -> None:
    defs = build_job_defs(demo_fleet)
    keys = [
        key
        for m in demo_fleet.models
        for key in (["models", m.model_id], ["eval_reports", m.model_id])
    ]
    stubs = [dg.asset(key=k, name=None)(lambda: None) for k in keys]
    merged = dg.Definitions.merge(defs, dg.Definitions(assets=stubs, resources=default_resources()))
    for a in ActionKind:
        job = merged.resolve_job_def(JOB_NAMES[a])
        assert job.executor_def is dg.in_process_executor
    assert merged.resolve_job_def("modelops_reconcile").name == "modelops_reconcile"
    with_cron = [m for m in demo_fleet.models if m.refresh_cron]
    assert with_cron
    for m in demo_fleet.models:
        job = merged.resolve_job_def(f"refresh_{m.model_id}")
        keys = {k.path[0] for k in job.asset_layer.selected_asset_keys}
        assert keys == {"models", "eval_reports"}
    for m in with_cron:
        sched = merged.resolve_schedule_def(f"refresh_{m.model_id}_schedule")
        assert sched.cron_schedule == m.refresh_cron
        assert sched.default_status is dg.DefaultScheduleStatus.RUNNING
        assert sched.job_name == f"refresh_{m.model_id}"


# ---------------------------------------------------------------------- with a gateway


class Gateway:
    """A real gateway app under uvicorn on a real socket, in a thread of this process."""

    def __init__(self, state_dir: Path) -> None:
        import uvicorn

        from serving.gateway import GatewayConfig, NullSink, create_app

        app = create_app(
            GatewayConfig(port=0, state_file=state_dir / "routes.json"),
            sink=NullSink(),
            schema_source=None,
            contracts=None,
        )
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                lifespan="on",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=1,
            )
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Gateway:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.sock.close()

    def table(self, model_id: str) -> dict[str, Any]:
        from modelops.service_token import auth_header, service_token

        # The gateway and the controller resource read the same $MODELOPS_HOME token.
        headers = auth_header(service_token())
        tables = httpx.get(f"{self.url}/admin/routes", headers=headers).json()["tables"]
        return next(t for t in tables if t["model_id"] == model_id)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    with Gateway(tmp_path) as gw:
        yield gw


@pytest.mark.xdist_group("triton")
def test_gateway_gets_the_routes_in_the_same_run(home: Path, triton: Any, gateway: Gateway) -> None:
    reg, mid = new_model(home, versions=2)
    res = resources(triton, gateways=[gateway.url])
    assert run(ActionKind.promote, res, model_id=mid, version=1)[0].success
    assert gateway.table(mid)["prod"]["version"] == 1

    result, _ = run(
        ActionKind.start_shadow, res, model_id=mid, version=2, expected="OFFLINE_PASSED"
    )
    assert result.success
    t = gateway.table(mid)
    assert t["prod"]["version"] == 1 and t["shadow"]["endpoint"]["version"] == 2
    assert t["generation"] == reg.desired_state(mid).generation

    run(ActionKind.canary_step, res, model_id=mid, version=2, expected="SHADOW", percent=10)
    assert run(ActionKind.promote, res, model_id=mid, version=2, expected="CANARY")[0].success
    assert gateway.table(mid)["prod"]["version"] == 2
    result, _ = run(ActionKind.rollback, res, model_id=mid, version=2, expected="PROMOTED")
    assert result.success
    t = gateway.table(mid)
    assert t["prod"]["version"] == 1, "traffic is back on the last good version"
    assert t["generation"] == reg.desired_state(mid).generation
