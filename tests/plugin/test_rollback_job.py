"""The rollback job end to end on a real Triton: the canary step snapshots the state, the
rollback job restores it, and the report is materialized as rollback_reports/<id>."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from test_jobs import SIGNATURE, failure_message, loaded, resources, run, tiny_onnx

from jobs import ACTION_JOBS
from modelops.actions import ActionKind, ActionRequest, run_config_for
from modelops.artifacts import open_store
from modelops.registry import Registry
from modelops.spec import ModelSpec, State, VersionMeta
from sensors import action_run_request


def snapshot_model(home: Path) -> tuple[Registry, str, sqlite3.Connection]:
    reg = Registry(f"sqlite:///{home / 'registry.db'}")
    mid = f"ctr_{uuid.uuid4().hex[:8]}"
    reg.register_dataset("clicks", 1, "s3://b/clicks", kind="dataset")
    reg.register_dataset("clicks-eval", 1, "s3://b/eval", kind="eval_set")
    reg.add_team("ads")
    app = sqlite3.connect(home / "state.db", isolation_level=None)
    app.execute("CREATE TABLE calib (bucket INTEGER PRIMARY KEY, scale REAL)")
    app.executemany("INSERT INTO calib VALUES (?, ?)", [(b, 1.0) for b in range(10)])
    reg.create_model(
        ModelSpec.model_validate(
            {
                "model_id": mid,
                "owner_team": "ads",
                "tier": "L1",
                "rollback_class": "STATE_SNAPSHOT",
                "model_class": "dnn",
                "framework": "onnx",
                "policy": {"primary_metric": "ctr"},
                "state_stores": [
                    {
                        "name": "calibration",
                        "kind": "sql_table",
                        "url": f"sqlite:///{home / 'state.db'}",
                        "table": "calib",
                    }
                ],
            }
        )
    )
    store = open_store(str(home / "artifacts"))
    for i in (1, 2):
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
    return reg, mid, app


def materializations(result: Any) -> list[Any]:
    return [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]


@pytest.mark.xdist_group("triton")
def test_canary_snapshot_then_rollback_job_restores_and_reports(home: Path, triton: Any) -> None:
    reg, mid, app = snapshot_model(home)
    res = resources(triton)
    assert run(ActionKind.promote, res, model_id=mid, version=1, expected="OFFLINE_PASSED")[
        0
    ].success
    assert run(ActionKind.start_shadow, res, model_id=mid, version=2, expected="OFFLINE_PASSED")[
        0
    ].success
    before = dict(app.execute("SELECT bucket, scale FROM calib").fetchall())
    result, _ = run(
        ActionKind.canary_step, res, model_id=mid, version=2, expected="SHADOW", percent=5
    )
    assert result.success
    [snap] = reg.snapshots_of(mid, 2)
    assert reg.get_version(mid, 2).rollback_snapshot_uri == snap.uri
    # The canary recalibrates three buckets.
    for b in (2, 3, 4):
        app.execute("UPDATE calib SET scale = 1.5 WHERE bucket = ?", (b,))

    result, _ = run(ActionKind.rollback, res, model_id=mid, version=2, expected="CANARY")
    assert result.success, failure_message(result)
    assert reg.state_of(mid, 2) is State.ROLLED_BACK
    assert dict(app.execute("SELECT bucket, scale FROM calib").fetchall()) == before
    assert f"{mid}__v1" in loaded(triton)
    [mat] = materializations(result)
    assert mat.asset_key.path[0] == "rollback_reports"
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["writes_reverted"] == 3 and meta["rollback_class"] == "STATE_SNAPSHOT"
    assert "3 writes after the snapshot's cursor reverted" in meta["report"]
    assert meta["report_json"]["state"][0]["keys_after_cursor"] == [
        '{"bucket": 2}',
        '{"bucket": 3}',
        '{"bucket": 4}',
    ]
    # A retried run answers from the record and restores nothing again.
    app.execute("UPDATE calib SET scale = 9.0 WHERE bucket = 0")
    result, _ = run(ActionKind.rollback, res, model_id=mid, version=2, expected="CANARY")
    assert result.success, failure_message(result)
    assert app.execute("SELECT scale FROM calib WHERE bucket = 0").fetchone()[0] == 9.0


@pytest.mark.xdist_group("triton")
def test_an_unreachable_store_fails_the_canary_step_and_nothing_moves(
    home: Path, triton: Any
) -> None:
    reg, mid, app = snapshot_model(home)
    res = resources(triton)
    run(ActionKind.promote, res, model_id=mid, version=1, expected="OFFLINE_PASSED")
    run(ActionKind.start_shadow, res, model_id=mid, version=2, expected="OFFLINE_PASSED")
    app.close()
    (home / "state.db").unlink()
    (home / "state.db").mkdir()  # the store's path now cannot be opened as a database
    result, _ = run(
        ActionKind.canary_step, res, model_id=mid, version=2, expected="SHADOW", percent=5
    )
    assert not result.success
    msg = failure_message(result)
    assert "\n" not in msg and "refused, nothing moved" in msg and "'calibration'" in msg
    # The step into CANARY moved nothing; the approval step before it is the action's
    # documented intermediate state, from which a re-run resumes.
    assert reg.state_of(mid, 2) is State.APPROVED_CANARY and "already committed" in msg
    assert reg.desired_state(mid).canary is None
    assert reg.snapshots_of(mid, 2) == []


@pytest.mark.xdist_group("triton")
def test_a_corrupt_snapshot_does_not_gate_the_rollback_job(home: Path, triton: Any) -> None:
    """Rollbacks are never gated by state: with the canary's snapshot corrupt, the job
    still puts v1 back on the serving plane, leaves the store byte-identical, materializes
    the report, and fails loudly with the one line naming the store."""
    from modelops.state_stores import load_manifest

    reg, mid, app = snapshot_model(home)
    res = resources(triton)
    run(ActionKind.promote, res, model_id=mid, version=1, expected="OFFLINE_PASSED")
    run(ActionKind.start_shadow, res, model_id=mid, version=2, expected="OFFLINE_PASSED")
    result, _ = run(
        ActionKind.canary_step, res, model_id=mid, version=2, expected="SHADOW", percent=5
    )
    assert result.success
    for b in (2, 3, 4):
        app.execute("UPDATE calib SET scale = 1.5 WHERE bucket = ?", (b,))
    store = open_store(str(home / "artifacts"))
    [snap] = reg.snapshots_of(mid, 2)
    blob = store.path_for(load_manifest(store, snap.sha256).entry("calibration").blobs[0])
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes() + b"rot")
    state_bytes = (home / "state.db").read_bytes()

    instance = dg.DagsterInstance.ephemeral()
    req = ActionRequest(model_id=mid, version=2, expected="CANARY")
    result = ACTION_JOBS[ActionKind.rollback].execute_in_process(
        run_config=run_config_for(ActionKind.rollback, req),
        resources=res,
        instance=instance,
        raise_on_error=False,
        tags=action_run_request(ActionKind.rollback, req).tags,
    )
    assert not result.success
    msg = failure_message(result)
    assert "\n" not in msg and "traffic is back on v1" in msg
    assert f"restore refused: {mid}/calibration left untouched" in msg
    assert f"expected sha256 {blob.name[:16]}" in msg
    assert reg.state_of(mid, 2) is State.ROLLED_BACK
    assert reg.desired_state(mid).canary is None
    assert f"{mid}__v1" in loaded(triton)
    assert (home / "state.db").read_bytes() == state_bytes
    (failure,) = result.get_step_failure_events()
    fmeta = failure.step_failure_data.user_failure_data.metadata
    assert "Restore refused" in fmeta["report"].value
    assert fmeta["restore_refused"].value == f"{mid}/calibration"
    # The report is materialized although the run failed.
    [rr] = reg.rollback_runs_of(mid)
    key = dg.AssetKey(["rollback_reports", f"{mid}__v2__global__run{rr.id}"])
    ev = instance.get_latest_materialization_event(key)
    assert ev is not None and ev.asset_materialization is not None
    meta = {k: v.value for k, v in ev.asset_materialization.metadata.items()}
    assert meta["writes_reverted"] == 0 and "calibration" in meta["restore_refused"]
    assert "Restore refused" in meta["report"]
    assert rr.status == "failed" and rr.progress[f"restore:{mid}/calibration"]["status"] == (
        "refused"
    )
