"""The demo's governance phase (`demo.governance_phase`) produces issue 11's five outcomes,
checked against the registry's own records, not against what the phase printed."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from demo.governance_phase import CANARY_WRITES, INDEX_WRITES, run_governance_phase
from demo.instance import write_instance_yaml
from modelops.registry import Registry
from modelops.spec import State
from modelops.store.tables import approvals

S = State


@pytest.fixture(scope="module")
def phase(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[str]]:
    home = tmp_path_factory.mktemp("gov-home")
    write_instance_yaml(home)  # as in the demo home: the report is materialized there
    lines: list[str] = []
    out = run_governance_phase(home, lines.append)
    return home, out, lines


@pytest.fixture
def reg(phase: tuple[Path, dict[str, Any], list[str]]) -> Any:
    r = Registry(f"sqlite:///{phase[0] / 'registry.db'}")
    yield r
    r.close()


def test_state_snapshot_rollback_restores_the_pre_canary_rows(
    phase: tuple[Path, dict[str, Any], list[str]], reg: Registry
) -> None:
    home, out, lines = phase
    o = out["state_snapshot"]
    assert reg.state_of("counters_ranker", 2) is S.ROLLED_BACK
    assert reg.state_of("counters_ranker", 1) is S.PROMOTED
    [snap] = reg.snapshots_of("counters_ranker", 2)
    assert o["snapshot"] == snap.sha256 and snap.stores["counters"]
    # The table is back to its rows before the canary: those the phase seeded.
    with sqlite3.connect(home / "governance" / "counters.db") as db:
        rows = dict(db.execute("SELECT user_id, clicks FROM counters").fetchall())
    assert rows == {u: u % 17 for u in range(500)}
    # The count is the rollback run's own, as recorded in its report.
    [rb] = [e for e in reg.audit_entries("counters_ranker") if e.action == "rollback"]
    run = reg.rollback_run(rb.id)
    assert run is not None and run.status == "done" and run.report is not None
    [st] = run.report["state"]
    assert st["writes_after_cursor"] == o["writes_reverted"] == CANARY_WRITES
    assert [json.loads(k)["user_id"] for k in st["keys_after_cursor"]] == o["keys"]
    assert any(f"{CANARY_WRITES} writes after the cursor reverted" in ln for ln in lines)


def test_irreversible_rollback_marks_the_dependent_and_writes_the_report(
    phase: tuple[Path, dict[str, Any], list[str]], reg: Registry
) -> None:
    home, out, _ = phase
    o = out["irreversible"]
    assert reg.state_of("credit_scorer", 2) is S.ROLLED_BACK
    assert reg.desired_state("credit_scorer").prod_version == 1
    assert [m.model_id for m in reg.needs_retrain()] == ["limit_setter"]
    assert reg.state_of("limit_setter", 1) is S.PROMOTED  # marked, not rolled back
    assert [c.feature for c in reg.contaminated("credit_score")] == ["credit_score"]
    assert reg.decay_window("credit_scorer") is not None
    assert o["downstream_restored"] == {"risk_index/index": INDEX_WRITES}
    with sqlite3.connect(home / "governance" / "risk_index.db") as db:
        rows = dict(db.execute("SELECT item, vec FROM risk_index").fetchall())
    assert rows == {i: f"v1-{i}" for i in range(200)}
    md = Path(o["report_markdown"]).read_text()
    for heading in ("## 1. Traffic cutover", "## 3. Downstream models", "## 5. Post-rollback"):
        assert heading in md
    assert Path(o["report_copy"]).read_text() == md
    doc = json.loads(Path(o["report_json"]).read_text())
    assert doc["sha256"] == reg.audit_entries("credit_scorer")[-1].payload["report_sha256"]
    # Materialized on the home's Dagster instance, as the rollback job does.
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        key = dg.AssetKey(o["rollback_report"].split("/"))
        assert instance.get_latest_materialization_event(key) is not None


def test_break_glass_ticket_arrives_exactly_once(
    phase: tuple[Path, dict[str, Any], list[str]], reg: Registry
) -> None:
    o = phase[1]["break_glass"]
    assert reg.state_of("checkout_ranker", 2) is S.PROMOTED
    assert reg.heightened_until("checkout_ranker") is not None
    entry = reg.audit_entries("checkout_ranker")[-1]
    assert (entry.action, entry.payload["ticket"]) == ("break_glass", o["ticket_id"])
    assert o["while_down"] == [0, 1]  # the receiver was down at the first attempt
    assert o["received"] == 1 and o["ticket"]["outbox_id"] == o["ticket_id"]
    assert o["ticket"]["kind"] == "postmortem" and o["ticket"]["approvers"] == ["sre-a", "sre-b"]
    assert reg.deliver_outbox("http://127.0.0.1:9/none", timeout_s=1) == (0, 0)  # none pending


def test_the_forged_approval_left_no_row(
    phase: tuple[Path, dict[str, Any], list[str]], reg: Registry
) -> None:
    o = phase[1]["forged_approval"]
    assert "does not verify" in o["refused"] and "\n" not in o["refused"]
    with reg.engine.connect() as conn:
        rows = conn.execute(
            select(approvals.c.approver, approvals.c.key_id).where(
                approvals.c.model_id == "limit_setter"
            )
        ).all()
    # The two genuine approvals only; none under the key id the forgery posed with.
    assert sorted(r.approver for r in rows) == ["model-risk-officer", "risk-lead"]
    entries = [e for e in reg.audit_entries("limit_setter") if e.action == "approval"]
    assert len(entries) == 2
    assert reg.verify_audit("limit_setter").ok


def test_article11_document_exists_with_its_sections(
    phase: tuple[Path, dict[str, Any], list[str]],
) -> None:
    o = phase[1]["article11"]
    md = Path(o["markdown"]).read_text()
    for n in range(1, 8):
        assert f"\n## {n}. " in md
    doc = json.loads(Path(o["json"]).read_text())
    assert (doc["model_id"], doc["version"], doc["tier"]) == ("limit_setter", 1, "L3")
    assert o["required_gaps"] == 0  # the L3 promotion gate let it through


def test_the_phase_refuses_a_home_that_already_has_its_models(
    phase: tuple[Path, dict[str, Any], list[str]],
) -> None:
    from demo.governance_phase import GovernancePhaseFailed

    reg = Registry(f"sqlite:///{phase[0] / 'registry.db'}")
    before = reg.row_counts()
    with pytest.raises(GovernancePhaseFailed, match="already in the registry"):
        run_governance_phase(phase[0], lambda _l: None)
    assert reg.row_counts() == before
    reg.close()
