"""Article 11 technical documentation: each section filled from the record it names, gaps
listed when a record is missing, the L3 promotion gate, and `modelops docs`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from modelops.cli.entry import main
from modelops.compliance import (
    REQUIRED_SECTIONS,
    DocumentationGap,
    TechnicalDocument,
    build_document,
)
from modelops.registry import Registry
from modelops.spec import CodeRef, State, Tier, VersionMeta
from tests.test_registry_audit import drop_triggers
from tests.test_registry_kit import (
    add_people,
    approve_l3,
    key_of,
    new_model,
    refused,
    spec,
    version,
)

M = "ranker"
S = State
CODE = CodeRef(repo="git@example.org:ml/ranker", commit_sha="abc1234", path="train.py")


def _step(reg: Registry, v: int, target: State, percent: int | None = None) -> None:
    approve_l3(reg, M, v, target)
    reg.transition(
        M,
        v,
        target,
        actor="ops",
        expected=reg.state_of(M, v),
        percent=percent,
        reason=f"reviewed for {target.value}",
    )


def _section(doc: TechnicalDocument, n: int) -> dict[str, Any]:
    return next(s for s in doc.sections if s.number == n).content


def _gap_records(doc: TechnicalDocument, n: int | None = None) -> list[str]:
    return [g.record for g in doc.gaps if n is None or g.section == n]


@pytest.fixture
def fleet(registry: Registry) -> Registry:
    """An L3 model: v1 promoted on two signed approvals, v2 walked to CANARY and rolled
    back, a drift alert and an online alert on record."""
    add_people(registry)
    new_model(registry, tier=Tier.L3)
    meta = VersionMeta(
        training_code_version=CODE,
        eval_metrics={"auc": 0.91},
        eval_slice_metrics={"global": {"auc": 0.91}},
    )
    v1 = version(registry, meta=meta).version
    _step(registry, v1, S.PROMOTED)
    v2 = version(registry, parent=v1).version
    for target, pct in (
        (S.APPROVED_SHADOW, None),
        (S.SHADOW, None),
        (S.APPROVED_CANARY, None),
        (S.CANARY, 1),
    ):
        _step(registry, v2, target, pct)
    registry.transition(M, v2, S.ROLLED_BACK, actor="ops", reason="auc fell 4% in canary")
    registry.record_alert(
        M,
        kind="feature_drift",
        detail="clicks_7d drifted (psi 0.31)",
        payload={"version": v1, "slice": "global"},
        actor="system:drift",
    )
    registry.record_alert(
        M, kind="online:guardrail", detail="latency p99 over", payload={"version": v2}
    )
    return registry


def test_each_section_is_filled_from_its_record(fleet: Registry) -> None:
    doc = build_document(fleet, M, 1)
    spec_ = fleet.get_model(M)
    # 1: the spec
    s1 = _section(doc, 1)
    assert s1["intended_purpose"] == spec_.intended_purpose and s1["tier"] == "L3"
    assert fleet.get_version(M, 1).weights_hash in s1["weights"]
    # 2: the version record (trainer's run and code ref)
    s2 = _section(doc, 2)
    assert s2["training_run_id"] == fleet.get_version(M, 1).training_run_id
    assert s2["training_code"] == "git@example.org:ml/ranker@abc1234:train.py"
    # 3: dataset records, with their hashes
    s3 = _section(doc, 3)
    assert s3["training_data"]["sha256"] == fleet.get_dataset("clicks", 1).content_hash
    assert s3["eval_set"]["kind"] == "eval_set" and s3["eval_set"]["ref"] == "clicks-eval@1"
    # 4: the gate result entry and per-slice results
    s4 = _section(doc, 4)
    assert [g["results"] for g in s4["gate_results"]] == [{"auc": 0.9}]
    assert s4["per_slice"][0]["verdict"] == "OFFLINE_PASSED"
    assert s4["per_slice"][0]["eval_metrics"] == {"auc": 0.91}
    # 5: both approvals of the promotion, each signature re-verified
    sigs = _section(doc, 5)["signatures"]
    assert {(c["signer"], c["target"], c["verified"]) for c in sigs} == {
        ("rank-lead", "PROMOTED", True),
        ("safety-lead", "PROMOTED", True),
    }
    # 6: the policy, and v1's drift alert (v2's alert and rollback are not v1's events)
    s6 = _section(doc, 6)
    assert [a["kind"] for a in s6["drift_alerts"]] == ["feature_drift"]
    assert s6["online_alerts"] == [] and s6["rollbacks"] == []
    assert s6["drift_thresholds"]["psi_threshold"] == spec_.policy.drift.psi_threshold
    # 7: every entry of v1's chain, and the chain verifies
    s7 = _section(doc, 7)
    assert s7["chain_verified"] is True
    mine = [e.seq for e in fleet.audit_entries(M) if e.version in (None, 1)]
    assert [e["seq"] for e in s7["entries"]] == mine
    # Advisory gap only: no guardrails declared.
    assert doc.required_gaps == []
    assert _gap_records(doc) == ["guardrail metrics in the policy"]

    doc2 = build_document(fleet, M, 2)
    s6 = _section(doc2, 6)
    assert [(r["reason"], r["slice"]) for r in s6["rollbacks"]] == [
        ("auc fell 4% in canary", "global")
    ]
    assert [a["kind"] for a in s6["online_alerts"]] == ["online:guardrail"]
    assert s6["canary_ladder_taken"] == [1]
    approvals = [c for c in _section(doc2, 5)["signatures"] if c["action"] == "approval"]
    assert len(approvals) == 8 and all(c["verified"] for c in approvals)
    assert _section(doc2, 2)["parent_model_version"] == 1
    # v2 reported no code reference: an advisory gap naming the record.
    assert "version.training_code_version" in " ".join(_gap_records(doc2, 2))
    assert not [g for g in doc2.gaps if g.section == 2 and g.required]


def test_markdown_and_json_carry_every_section(fleet: Registry) -> None:
    doc = build_document(fleet, M, 2)
    md = doc.to_markdown()
    for n in range(1, 8):
        assert f"\n## {n}. " in md
    assert "auc fell 4% in canary" in md and "signature re-verified" in md
    again = TechnicalDocument.model_validate_json(doc.model_dump_json())
    assert again == doc
    assert build_document(fleet, M, 2) == doc  # records alone: the same records, one document


def test_a_signature_that_no_longer_verifies_is_a_gap(fleet: Registry) -> None:
    """Rewrite the signed statement of a recorded approval: `audit verify` names it, and the
    document says failed for that signature and lists it as a required gap."""
    drop_triggers(fleet)
    with fleet.engine.begin() as conn:
        row = conn.execute(
            text(
                "SELECT id, payload FROM audit_log WHERE action='approval' AND version=1 "
                "AND actor='safety-lead'"
            )
        ).one()
        payload = json.loads(row.payload)
        payload["statement"]["payload"]["target_state"] = "CANARY"  # no longer what was signed
        conn.execute(
            text("UPDATE audit_log SET payload=:p WHERE id=:i"),
            {"p": json.dumps(payload), "i": row.id},
        )
    doc = build_document(fleet, M, 1)
    failed = [c for c in _section(doc, 5)["signatures"] if not c["verified"]]
    assert [c["signer"] for c in failed] == ["safety-lead"]
    assert any("safety-lead" in g.record and g.required for g in doc.gaps)


def test_l3_promotion_is_refused_with_gaps_and_allowed_once_filled(registry: Registry) -> None:
    add_people(registry)
    registry.register_dataset("clicks", 1, "s3://data/clicks/1")  # no content hash
    bare = spec(M, tier=Tier.L3).model_copy(update={"intended_purpose": "", "description": ""})
    new_model(registry, tier=Tier.L3)  # the kit's datasets: clicks@1 stays unhashed
    # Make the model's spec the bare one, through a signed amendment (the only way).
    request = registry.sign_amendment(bare, key_of("rank-eng"), signer="rank-eng", reason="r")
    registry.amend_model(bare, statement=request)
    v1 = version(registry).version
    approve_l3(registry, M, v1, S.PROMOTED)
    info = refused(
        registry,
        DocumentationGap,
        lambda: registry.transition(M, v1, S.PROMOTED, actor="ops", reason="launch"),
    )
    line = str(info.value)
    assert "\n" not in line
    assert "spec.intended_purpose" in line and "spec.description" in line
    assert "content hash of training data clicks@1" in line and "modelops model amend" in line
    assert registry.state_of(M, v1) is S.OFFLINE_PASSED
    doc = build_document(registry, M, v1)
    assert {g.section for g in doc.required_gaps} == {1, 3}
    assert {g.section for g in doc.required_gaps} <= REQUIRED_SECTIONS

    # Fill them: the purpose by amendment, the data as a new hashed dataset version.
    filled = spec(M, tier=Tier.L3)
    request = registry.sign_amendment(filled, key_of("rank-eng"), signer="rank-eng", reason="p")
    registry.amend_model(filled, statement=request)
    registry.register_dataset("clicks", 2, "s3://data/clicks/2", content_hash="a" * 64)
    v2 = version(registry, train="clicks@2").version
    approve_l3(registry, M, v2, S.PROMOTED)
    res = registry.transition(M, v2, S.PROMOTED, actor="ops", reason="launch")
    assert res.to_state is S.PROMOTED
    assert build_document(registry, M, v2).required_gaps == []


def test_l3_promotion_without_approvals_on_record_names_oversight(registry: Registry) -> None:
    """Below L3 nothing is gated; the document still lists the oversight gap."""
    add_people(registry)
    new_model(registry, tier=Tier.L1)
    v = version(registry).version
    registry.transition(M, v, S.PROMOTED, actor="ops")
    doc = build_document(registry, M, v)
    assert "signed human approval of this version" in _gap_records(doc, 5)


# ---------------------------------------------------------------------------- the CLI


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_the_document_and_prints_the_gaps(
    fleet: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = fleet.url
    code, out, err = _cli(capsys, "--registry", url, "docs", f"{M}@2", "--out", str(tmp_path))
    assert code == 0, err
    assert str(tmp_path / "DOC.md") in out
    assert "gaps: 2 (0 in required sections)" in out
    assert "§2 advisory: missing version.training_code_version" in out
    doc = TechnicalDocument.model_validate_json((tmp_path / "DOC.json").read_text())
    assert doc == build_document(fleet, M, 2)
    assert (tmp_path / "DOC.md").read_text() == doc.to_markdown()


@pytest.mark.parametrize(
    ("target", "expect"),
    [
        ("nope@1", "unknown model 'nope'"),
        (M, "names no version; allowed: MODEL@VERSION"),
        (f"{M}@x", "malformed; allowed: MODEL or MODEL@VERSION"),
        (f"{M}@0", "out of range"),
        (f"{M}@99", "99"),
    ],
)
def test_cli_bad_input_is_one_line_exit_1(
    fleet: Registry, capsys: pytest.CaptureFixture[str], target: str, expect: str
) -> None:
    code, out, err = _cli(capsys, "--registry", fleet.url, "docs", target)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], err
    assert "Traceback" not in err


def test_cli_unwritable_out_is_one_line(
    fleet: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _cli(capsys, "--registry", fleet.url, "docs", f"{M}@1", "--out", str(blocker))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "cannot write the documentation" in err
