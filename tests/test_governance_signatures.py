"""Identity that cannot be forged, wired into the registry (SQLite and PostgreSQL).

Each refusal is one line naming why and leaves no row behind (`refused` compares every
table's row count); `audit verify` re-verifies every stored signature, checks the key table
against its entries, and with anchors catches a whole-chain rewrite that is internally
consistent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from test_registry_audit import drop_triggers
from test_registry_kit import (
    add_people,
    approve,
    enroll_keys,
    key_of,
    new_model,
    refused,
    version,
    weights_hash,
)

from modelops.artifacts import LocalArtifactStore
from modelops.audit import GENESIS, canonical_json, entry_hash
from modelops.errors import ApprovalRequired, ConflictError, SignatureRefused, SpecError
from modelops.identity import (
    ExpiredSignature,
    ForgedSignature,
    ReplayedSignature,
    RevokedKey,
    SelfApproval,
    SignedStatement,
    UnknownKey,
    WrongEpoch,
    WrongSubject,
    generate_signing_key,
)
from modelops.registry import Registry
from modelops.registry.signatures import UnsignedStatement
from modelops.spec import RollbackClass, State, Tier

S = State
M = "ranker"


@pytest.fixture
def l2(registry: Registry) -> tuple[Registry, int]:
    """An L2 model with a candidate awaiting its first, approved promotion."""
    new_model(registry, tier=Tier.L2)
    add_people(registry)
    return registry, version(registry).version


def sign(reg: Registry, who: str, v: int, *, key: Any = None, **over: Any) -> SignedStatement:
    target, epoch = reg.approval_subject(M, v)
    fields: dict[str, Any] = dict(
        model=M, version=v, slice="global", target_state=target.value, epoch=epoch
    )
    fields.update(over)
    return reg.sign_as(key or key_of(who), kind="approval", signer=who, **fields)


def one_line(info: pytest.ExceptionInfo[Any]) -> str:
    line = str(info.value)
    assert "\n" not in line and line
    return line


def test_an_unsigned_approval_is_refused(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    info = refused(reg, UnsignedStatement, lambda: reg.approve(M, v, actor="rank-lead"))
    assert one_line(info).startswith(f"the approval of {M}@{v} on slice 'global' is unsigned")
    info = refused(
        reg, UnsignedStatement, lambda: reg.override(M, v, actor="safety-lead", reason="ok")
    )
    assert "is unsigned" in one_line(info)


def test_a_signed_approval_counts_and_carries_its_statement(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    stmt = sign(reg, "rank-lead", v)
    rec = reg.approve(M, v, statement=stmt.to_bytes())
    assert (rec.approver, rec.target) == ("rank-lead", S.PROMOTED)
    entry = reg.audit_entries(M)[-1]
    assert entry.actor == "rank-lead"
    assert SignedStatement.from_obj(entry.payload["statement"]) == stmt
    with reg.engine.connect() as conn:
        row = conn.execute(text("SELECT statement, key_id FROM approvals")).one()
    assert row.statement.encode() == stmt.to_bytes()
    assert row.key_id == key_of("rank-lead").key_id
    assert reg.transition(M, v, S.PROMOTED, actor="ops").to_state is S.PROMOTED
    assert reg.verify_audit().ok


def test_a_forged_signature_is_refused(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    good = sign(reg, "rank-lead", v)
    # The payload altered after signing (a later timestamp), the signature kept.
    later = good.payload.model_copy(update={"ts": good.payload.ts.replace("00.", "01.", 1)})
    altered = SignedStatement(payload=later, key_id=good.key_id, signature=good.signature)
    info = refused(reg, ForgedSignature, lambda: reg.approve(M, v, statement=altered))
    assert "does not verify" in one_line(info)
    # Signed by mallory's key, presented under rank-lead's key id.
    mallory = sign(reg, "rank-lead", v, key=generate_signing_key())
    posing = SignedStatement(
        payload=mallory.payload, key_id=key_of("rank-lead").key_id, signature=mallory.signature
    )
    info = refused(reg, ForgedSignature, lambda: reg.approve(M, v, statement=posing))
    assert one_line(info).startswith("signature on the approval")
    # Bytes that are not the canonical encoding are refused before any key is looked at.
    noisy = good.to_bytes().replace(b'{"key_id"', b'{ "key_id"', 1)
    refused(reg, ForgedSignature, lambda: reg.approve(M, v, statement=noisy))


def test_a_replayed_signature_is_refused(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    stmt = sign(reg, "rank-lead", v)
    reg.approve(M, v, statement=stmt)
    info = refused(reg, ReplayedSignature, lambda: reg.approve(M, v, statement=stmt))
    assert "was already used" in one_line(info)


def test_an_expired_signature_is_refused(l2: tuple[Registry, int], clock: Any) -> None:
    reg, v = l2
    stmt = sign(reg, "rank-lead", v)
    clock.advance(minutes=16)
    info = refused(reg, ExpiredSignature, lambda: reg.approve(M, v, statement=stmt))
    assert "allowed: at most 15m0s old" in one_line(info)
    future = sign(reg, "rank-lead", v)
    clock.advance(minutes=-10)
    refused(reg, ExpiredSignature, lambda: reg.approve(M, v, statement=future))


def test_a_signature_of_another_epoch_is_refused(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    _, epoch = reg.approval_subject(M, v)
    stale = sign(reg, "rank-lead", v, epoch=epoch + 1)
    info = refused(reg, WrongEpoch, lambda: reg.approve(M, v, statement=stale))
    assert f"state epoch {epoch + 1}" in one_line(info)


def test_a_signature_for_another_subject_is_refused(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    other = version(reg).version
    stmt = sign(reg, "rank-lead", other)
    info = refused(reg, WrongSubject, lambda: reg.approve(M, v, statement=stmt, target=S.PROMOTED))
    assert f"version={other}" in one_line(info)


def test_an_unknown_key_is_refused(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    stranger = sign(reg, "rank-lead", v, key=generate_signing_key())
    info = refused(reg, UnknownKey, lambda: reg.approve(M, v, statement=stranger))
    assert "is not registered to actor 'rank-lead'" in one_line(info)
    # A registered key of someone else: named as theirs.
    theirs = sign(reg, "rank-lead", v, key=key_of("safety-lead"))
    info = refused(reg, UnknownKey, lambda: reg.approve(M, v, statement=theirs))
    assert "belongs to actor 'safety-lead'" in one_line(info)


def test_a_revoked_key_is_refused_and_its_past_signatures_still_verify(
    l2: tuple[Registry, int],
) -> None:
    reg, v = l2
    approve(reg, M, v, "rank-lead")
    reg.revoke_key(key_of("rank-lead").key_id[:12], reason="laptop lost")
    info = refused(reg, RevokedKey, lambda: approve(reg, M, v, "rank-lead"))
    assert "was revoked at" in one_line(info)
    assert reg.verify_audit().ok  # what it signed before the revocation stands
    # A new key for the same actor signs again.
    fresh = generate_signing_key()
    reg.add_key("rank-lead", fresh.public_key)
    v2 = version(reg).version
    assert reg.approve(M, v2, actor="rank-lead", key=fresh).approver == "rank-lead"


def test_a_self_approval_is_refused(l2: tuple[Registry, int]) -> None:
    reg, _ = l2
    v = reg.register_version(
        M,
        weights_hash=weights_hash("mine"),
        weights_uri="file:///mine",
        training_run_id="run-mine",
        training_data="clicks@1",
        eval_set="clicks-eval@1",
        actor="rank-eng",
    ).version
    reg.record_gate_result(M, v, passed=True, results={})
    info = refused(reg, SelfApproval, lambda: approve(reg, M, v, "rank-eng"))
    assert "an approval must come from someone else" in one_line(info)
    # The mover's own (signed) approval still does not count for the move.
    approve(reg, M, v, "rank-lead")
    refused(reg, ApprovalRequired, lambda: reg.transition(M, v, S.PROMOTED, actor="rank-lead"))


def test_actor_must_name_the_signer(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    stmt = sign(reg, "rank-lead", v)
    info = refused(
        reg, SignatureRefused, lambda: reg.approve(M, v, actor="rank-eng", statement=stmt)
    )
    assert "not by 'rank-eng'" in one_line(info)


def test_an_override_signs_its_reason(registry: Registry) -> None:
    new_model(registry, tier=Tier.L2, rollback_class=RollbackClass.IRREVERSIBLE)
    add_people(registry)
    v = version(registry).version
    target, epoch = registry.override_subject(M, v)
    stmt = registry.sign_as(
        key_of("safety-lead"),
        kind="override",
        signer="safety-lead",
        epoch=epoch,
        model=M,
        version=v,
        slice="global",
        target_state=target.value,
        reason="ledger writes reviewed",
    )
    info = refused(
        registry,
        WrongSubject,
        lambda: registry.override(M, v, statement=stmt, reason="something else"),
    )
    assert "signed with reason 'ledger writes reviewed'" in one_line(info)
    registry.override(M, v, statement=stmt)
    assert registry.audit_entries(M)[-1].payload["reason"] == "ledger writes reviewed"
    assert registry.verify_audit().ok


# ---------------------------------------------------------------------------- audit verify


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [("signer", "rank-eng", "SIGNATURE_UNKNOWN_KEY"), ("epoch", 7, "SIGNATURE_FORGED")],
)
def test_audit_verify_re_verifies_stored_signatures(
    l2: tuple[Registry, int], field: str, value: Any, kind: str
) -> None:
    reg, v = l2
    approve(reg, M, v, "rank-lead")
    assert reg.verify_audit().ok
    drop_triggers(reg)
    # Someone with the database edits the approval's statement and rehashes the chain: the
    # chains hold, the signature does not.
    rewrite_chain(reg, reg.audit_entries(M), lambda e: _edit_statement(e, field, value))
    problems = reg.verify_audit().problems
    assert [p.kind for p in problems] == [kind]
    assert problems[0].chain == f"model:{M}" and problems[0].seq == len(reg.audit_entries(M))


def test_a_key_slipped_into_the_table_is_named(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    evil = generate_signing_key()
    with reg.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO actor_keys (key_id, actor, public_key, created_at) "
                "VALUES (:k, 'rank-lead', :p, 'x')"
            ),
            {"k": evil.key_id, "p": evil.public_key.to_pem().decode()},
        )
    problems = reg.verify_audit().problems
    assert [p.kind for p in problems] == ["KEY_MISMATCH"]
    assert "has no add_key entry" in problems[0].detail


def test_an_unsigned_approval_row_is_named(l2: tuple[Registry, int]) -> None:
    reg, v = l2
    approve(reg, M, v, "rank-lead")
    with reg.engine.begin() as conn:
        conn.execute(text("UPDATE approvals SET statement = NULL"))
    assert [p.kind for p in reg.verify_audit().problems] == ["UNSIGNED"]


# ---------------------------------------------------------------------------- anchors


def _edit_statement(e: Any, field: str, value: Any) -> dict[str, Any]:
    p = dict(e.payload)
    if e.action == "approval":
        st = dict(p["statement"])
        st["payload"] = {**st["payload"], field: value}
        p["statement"] = st
    return p


def rewrite_chain(reg: Registry, entries: list[Any], change: Any) -> None:
    """Rewrite a whole chain consistently: payloads, every hash and link, and the head."""
    chain = entries[0].chain
    with reg.engine.begin() as conn:
        prev = GENESIS
        for e in entries:
            payload = canonical_json(change(e))
            actor = e.actor
            h = entry_hash(
                chain, e.seq, e.model_id, e.version, e.action, e.ts, actor, payload, prev
            )
            conn.execute(
                text(
                    "UPDATE audit_log SET payload = :p, prev_hash = :prev, hash = :h "
                    "WHERE chain = :c AND seq = :s"
                ),
                {"p": payload, "prev": prev, "h": h, "c": chain, "s": e.seq},
            )
            prev = h
        conn.execute(
            text("UPDATE audit_heads SET hash = :h WHERE chain = :c"), {"h": prev, "c": chain}
        )


def test_anchors_catch_a_consistent_whole_chain_rewrite(
    l2: tuple[Registry, int], tmp_path: Path
) -> None:
    reg, v = l2
    store = LocalArtifactStore(tmp_path / "artifacts")
    service = generate_signing_key()
    reg.enroll_actor("service:anchors", "ranking", role="service", public_key=service.public_key)
    approve(reg, M, v, "rank-lead")
    reg.record_alert(M, kind="drift", detail="clicks_7d drifted on slice global")
    first = reg.anchor_heads(store, service, signer="service:anchors")
    assert first.checkpoint.prev is None and f"model:{M}" in first.checkpoint.heads
    second = reg.anchor_heads(store, service, signer="service:anchors")
    assert second.checkpoint.prev == first.sha256
    assert reg.verify_audit(anchors=store).ok

    # The attack: with full database access, the alert's detail is rewritten and every
    # hash, link and the head recomputed. Nothing inside the database can tell.
    drop_triggers(reg)
    entries = reg.audit_entries(M)

    def hide(e: Any) -> dict[str, Any]:
        return {**e.payload, "detail": "all quiet"} if e.action == "alert" else e.payload

    rewrite_chain(reg, entries, hide)
    assert reg.audit_entries(M)[-1].payload["detail"] == "all quiet"
    assert reg.verify_audit().ok  # internally consistent: the chains and replay hold
    problems = reg.verify_audit(anchors=store).problems
    assert {p.kind for p in problems} == {"REWRITTEN"}
    assert all(p.chain == f"model:{M}" for p in problems) and len(problems) == 2
    assert "the chain was rewritten" in problems[0].detail


def test_anchors_need_a_service_key_and_name_a_missing_checkpoint(
    l2: tuple[Registry, int], tmp_path: Path
) -> None:
    reg, _ = l2
    store = LocalArtifactStore(tmp_path / "artifacts")
    assert [p.kind for p in reg.verify_audit(anchors=store).problems] == ["MISSING"]
    info = refused(reg, SpecError, lambda: reg.anchor_heads(store, key_of("ops"), signer="ops"))
    assert "not a service actor" in one_line(info)
    service = generate_signing_key()
    reg.enroll_actor("service:anchors", "ranking", role="service", public_key=service.public_key)
    reg.anchor_heads(store, service, signer="service:anchors")
    reg.anchor_heads(store, service, signer="service:anchors")
    index = sorted((tmp_path / "artifacts" / "anchors").glob("*.json"))
    index[0].unlink()  # a checkpoint dropped from the sequence
    assert [p.kind for p in reg.verify_audit(anchors=store).problems] == ["BROKEN_SEQUENCE"]


def test_keys_and_roles(registry: Registry) -> None:
    new_model(registry)
    info = refused(
        registry,
        SpecError,
        lambda: registry.enroll_actor("eve", "ranking", role="god"),
    )
    assert "allowed: engineer, senior, admin, service" in one_line(info)
    registry.enroll_actor("eve", "ranking", role="senior", public_key=key_of("eve").public_key)
    assert [k["actor"] for k in registry.actor_keys("eve")] == ["eve"]
    info = refused(
        registry,
        ConflictError,
        lambda: registry.enroll_actor("mallory", "ranking", public_key=key_of("eve").public_key),
    )
    assert "already registered to 'eve'" in one_line(info)
    enroll_keys(registry, "eve")  # the same key again: nothing new
    assert len(registry.actor_keys()) == 1
    registry.revoke_key(key_of("eve").key_id, reason="rotated")
    row = registry.actor_keys("eve")[0]
    assert row["revoked_reason"] == "rotated" and row["revoked_at"]


def test_unsigned_approvals_from_before_signatures_are_legacy_not_problems(
    l2: tuple[Registry, int],
) -> None:
    """An upgraded registry's `enable_signatures` entry (written by migration 0004 when the
    log is not empty) marks the unsigned approvals recorded before it as legacy; one after
    it is named."""
    from datetime import UTC, datetime

    from modelops import audit

    reg, v = l2

    def unsigned_approval(who: str, team: str) -> None:
        ts = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
        with reg.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO approvals (model_id, version, slice, target_state, epoch, "
                    "approver, team, ts) VALUES (:m, :v, 'global', 'PROMOTED', 1, :a, :t, :ts)"
                ),
                {"m": M, "v": v, "a": who, "t": team, "ts": ts.isoformat()},
            )
            audit.append(
                conn,
                model_id=M,
                version=v,
                action="approval",
                ts=ts,
                actor=who,
                payload={
                    "slice": "global",
                    "from": "OFFLINE_PASSED",
                    "to": "PROMOTED",
                    "team": team,
                },
            )

    unsigned_approval("rank-lead", "ranking")
    assert [p.kind for p in reg.verify_audit().problems] == ["UNSIGNED", "UNSIGNED"]
    with reg.engine.begin() as conn:
        last = conn.execute(text("SELECT MAX(id) FROM audit_log")).scalar()
        audit.append(
            conn,
            model_id=None,
            version=None,
            action="enable_signatures",
            ts=datetime.now(UTC),
            actor="migration:0004",
            payload={"legacy_before_id": int(last)},
        )
    assert reg.verify_audit().ok
    unsigned_approval("rank-eng", "ranking")
    problems = reg.verify_audit().problems
    assert [p.kind for p in problems] == ["UNSIGNED"]
    assert "carries no signature" in problems[0].detail
