"""Break-glass as a Dagster job (signed statements in its config, never a key), and the
anchor and outbox jobs the governance schedules run."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from jobs.governance_jobs import anchor_job, break_glass_job, governance_defs, outbox_job
from modelops.artifacts import LocalArtifactStore
from modelops.identity import generate_signing_key
from modelops.registry import Registry
from modelops.spec import DecisionPolicy, Framework, ModelClass, ModelSpec, State, Tier
from resources import default_resources


def test_break_glass_anchor_and_outbox_jobs(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = generate_signing_key()
    monkeypatch.setenv("MODELOPS_SERVICE_KEY", service.to_pem().decode())
    keys = {n: generate_signing_key() for n in ("eng", "sre-a", "sre-b")}
    reg = Registry()
    reg.add_team("ads")
    reg.enroll_actor("service:dagster", "ads", role="service", public_key=service.public_key)
    for name, key in keys.items():
        role = "senior" if name.startswith("sre") else "engineer"
        reg.enroll_actor(name, "ads", role=role, public_key=key.public_key)
    reg.create_model(
        ModelSpec(
            model_id="ctr",
            owner_team="ads",
            tier=Tier.L1,
            rollback_class="STATELESS",
            model_class=ModelClass.dnn,
            framework=Framework.onnx,
            policy=DecisionPolicy(primary_metric="ctr"),
        )
    )
    reg.register_dataset("d", 1, "s3://b/d")
    reg.register_dataset("e", 1, "s3://b/e", kind="eval_set")
    for v in (1, 2):
        reg.register_version(
            "ctr",
            weights_hash=f"{v}" * 64,
            weights_uri="s3://b/w",
            training_run_id=f"r{v}",
            training_data="d@1",
            eval_set="e@1",
        )
        reg.record_gate_result("ctr", v, passed=True, results={})
    reg.transition("ctr", 1, State.PROMOTED, actor="eng")

    def sign(who: str) -> str:
        return (
            reg.sign_break_glass("ctr", 2, keys[who], signer=who, reason="outage")
            .to_bytes()
            .decode()
        )

    res = default_resources()
    config = {
        "ops": {
            "break_glass_op": {
                "config": {
                    "model_id": "ctr",
                    "version": 2,
                    "request": sign("eng"),
                    "approvals": [sign("sre-a"), sign("sre-b")],
                }
            }
        }
    }
    run = break_glass_job.execute_in_process(run_config=config, resources=res)
    assert run.success and run.output_for_node("break_glass_op") == 1
    assert reg.state_of("ctr", 2) is State.PROMOTED
    # The receiver is down: the ticket waits. The anchor job signs every head with the env key.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MODELOPS_TICKET_WEBHOOK", f"http://127.0.0.1:{port}/t")
    assert outbox_job.execute_in_process(resources=res).output_for_node("outbox_op") == 1
    assert anchor_job.execute_in_process(resources=res).success
    assert reg.verify_audit(anchors=LocalArtifactStore(home / "artifacts")).ok
    by_name = {s.name: s for s in governance_defs().schedules or []}
    assert by_name["anchor_chain_heads"].default_status.value == "RUNNING"
    assert by_name["deliver_tickets"].default_status.value == "RUNNING"
    monkeypatch.delenv("MODELOPS_TICKET_WEBHOOK")
    assert {s.name: s for s in governance_defs().schedules or []}[
        "deliver_tickets"
    ].default_status.value == "STOPPED"
    reg.close()
