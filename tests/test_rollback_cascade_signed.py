"""Cascade approvals are signed statements over the dependent's live version, verified and
their nonces consumed in the root rollback's transaction; every refusal is one line and
leaves no row."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_registry_kit import key_of, refused
from test_rollback_irreversible import E, Fleet, serve_reporting

from modelops.identity import (
    ForgedSignature,
    ReplayedSignature,
    SelfApproval,
    UnsignedStatement,
    WrongSubject,
)
from modelops.registry import Registry
from modelops.rollback import build_plan, run_rollback
from modelops.spec import State as S


@pytest.fixture
def fleet(registry: Registry, tmp_path):  # type: ignore[no-untyped-def]
    f = Fleet(registry, tmp_path)
    f.rep_v = serve_reporting(registry)  # type: ignore[attr-defined]
    return f


def test_a_dependent_serving_nothing_needs_no_approval(registry: Registry, tmp_path: Any) -> None:
    """Nothing to roll back, and no version anyone could sign for: the plan says so."""
    f = Fleet(registry, tmp_path)
    plan = build_plan(registry, E, cascade=True, actor="ops")
    [rep] = [d for d in plan.dependents if d.model_id == "reporting"]
    assert (rep.action, rep.approvals_needed) == ("warn", 0)
    assert "nothing serving on slice 'global'" in rep.note
    report = run_rollback(registry, f.artifacts, E, f.v2, actor="ops", cascade=True)
    assert [c["model_id"] for c in report.cascaded] == ["dashboard"]


def _sign(reg: Registry, signer: str, root: str = E) -> str:
    stmt = reg.sign_cascade_approval(root, "reporting", key_of(signer), signer=signer)
    return stmt.to_bytes().decode()


def test_a_signed_cascade_is_consumed_with_the_rollback(fleet: Fleet, registry: Registry) -> None:
    stmt = _sign(registry, "safety-lead")
    plan = build_plan(registry, E, cascade=True, approvals=[stmt], actor="ops")
    [rep] = [d for d in plan.dependents if d.model_id == "reporting"]
    assert (rep.action, rep.approvers) == ("cascade", ["safety-lead"])
    report = run_rollback(
        registry, fleet.artifacts, E, fleet.v2, actor="ops", cascade=True, approvals=[stmt]
    )
    assert registry.state_of("reporting", fleet.rep_v) is S.ROLLED_BACK  # type: ignore[attr-defined]
    assert {c["model_id"] for c in report.cascaded} == {"dashboard", "reporting"}
    [entry] = [
        e for e in registry.audit_entries(E) if e.payload.get("cascade_approvals") is not None
    ]
    assert entry.version == fleet.v2
    assert [a["payload"]["signer"] for a in entry.payload["cascade_approvals"]] == ["safety-lead"]
    # A rerun (a retried job) answers from the record: its own approval is no replay.
    again = run_rollback(
        registry, fleet.artifacts, E, fleet.v2, actor="ops", cascade=True, approvals=[stmt]
    )
    assert again.cascaded == report.cascaded


@pytest.mark.parametrize("case", ["name", "forged", "wrong_root", "self", "twice", "kind"])
def test_bad_cascade_approvals_are_refused_whole(
    fleet: Fleet, registry: Registry, case: str
) -> None:
    good = _sign(registry, "safety-lead")
    given, error, needle = {
        "name": (["reporting=safety-lead"], UnsignedStatement, "unsigned"),
        "forged": (
            [good.replace(f'"cascade_root":"{E}"', '"cascade_root":"ranker"')],
            ForgedSignature,
            "does not verify",
        ),
        "wrong_root": ([_sign(registry, "safety-lead", root="ranker")], WrongSubject, "ranker"),
        "self": ([_sign(registry, "ops")], SelfApproval, "acting actor"),
        "twice": ([good, good], ReplayedSignature, "already used"),
        "kind": (
            [
                registry.sign_as(
                    key_of("safety-lead"),
                    kind="approval",
                    signer="safety-lead",
                    epoch=0,
                    model="reporting",
                    version=1,
                    slice="global",
                    target_state="ROLLED_BACK",
                )
                .to_bytes()
                .decode()
            ],
            WrongSubject,
            "not a cascade approval",
        ),
    }[case]
    info = refused(
        registry,
        error,
        lambda: run_rollback(
            registry, fleet.artifacts, E, fleet.v2, actor="ops", cascade=True, approvals=given
        ),
    )
    msg = str(info.value)
    assert "\n" not in msg and needle in msg, msg
    assert registry.state_of(E, fleet.v2) is S.PROMOTED
    assert registry.state_of("reporting", fleet.rep_v) is S.PROMOTED  # type: ignore[attr-defined]


def test_a_consumed_approval_cannot_authorize_another_plan(
    fleet: Fleet, registry: Registry
) -> None:
    stmt = _sign(registry, "safety-lead")
    run_rollback(
        registry, fleet.artifacts, E, fleet.v2, actor="ops", cascade=True, approvals=[stmt]
    )
    body = json.loads(stmt)
    assert body["payload"]["kind"] == "cascade_approval"
    # The dependent moved (its version is ROLLED_BACK), so the old statement authorizes nothing.
    with pytest.raises(Exception) as info:
        build_plan(registry, E, cascade=True, approvals=[stmt], actor="ops")
    assert "\n" not in str(info.value)


def test_audit_verify_reverifies_the_cascade_approvals(fleet: Fleet, registry: Registry) -> None:
    from test_identity import rewrite_chain

    stmt = _sign(registry, "safety-lead")
    run_rollback(
        registry, fleet.artifacts, E, fleet.v2, actor="ops", cascade=True, approvals=[stmt]
    )
    assert registry.verify_audit().ok

    def reroot(row: dict[str, object]) -> None:
        payload = json.loads(str(row["payload"]))
        for a in payload.get("cascade_approvals") or []:
            a["payload"]["cascade_root"] = "ranker"  # the signature no longer covers it
        row["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"))

    rewrite_chain(registry, f"model:{E}", reroot)
    problems = [p for p in registry.verify_audit().problems if "cascade approval" in p.detail]
    assert [p.kind for p in problems] == ["SIGNATURE_FORGED"]
