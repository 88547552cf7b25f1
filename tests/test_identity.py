"""Signed statements and chain-head anchors: every refusal names its reason in one line.

The anchor tests play an attacker with full database access (triggers dropped) who rewrites
a whole audit chain consistently, so the hash chain alone verifies; the anchor must catch it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from test_registry_kit import add_people, datasets, spec, version

from modelops.audit import GENESIS, entry_hash, verify_chain
from modelops.errors import SignatureRefused, SpecError
from modelops.identity import (
    ActorKey,
    AnchorProblem,
    Expected,
    ExpiredSignature,
    ForgedSignature,
    MalformedStatement,
    PublicKey,
    ReplayedSignature,
    RevokedKey,
    SelfApproval,
    SignedAnchor,
    SignedKind,
    SignedStatement,
    SigningKey,
    UnknownKey,
    WrongEpoch,
    WrongSubject,
    check_anchor,
    generate_signing_key,
    load_public_key,
    load_signing_key,
    make_anchor,
    measure_verification_cost,
    reverify_recorded,
    sign_statement,
    verify_statement,
    write_keypair,
)
from modelops.registry import Registry
from modelops.spec import State, Tier

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
APPROVER, DEPLOYER = "rank-lead", "ops"


@pytest.fixture(scope="module")
def approver_key() -> SigningKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def intruder_key() -> SigningKey:
    return generate_signing_key()


def approval(key: SigningKey, signer: str = APPROVER, **kw: Any) -> SignedStatement:
    fields: dict[str, Any] = dict(
        kind=SignedKind.approval,
        signer=signer,
        epoch=4,
        now=T0,
        model="ranker",
        version=3,
        slice="global",
        target_state="CANARY",
    )
    fields.update(kw)
    return sign_statement(key, **fields)


def verify(stmt: Any, key: SigningKey, **kw: Any) -> Any:
    args: dict[str, Any] = dict(
        keys=[ActorKey(APPROVER, key.public_key)],
        now=T0 + timedelta(minutes=1),
        current_epoch=4,
        nonce_seen=lambda n: False,
        acting_actor=DEPLOYER,
        expect=Expected(
            kind="approval", model="ranker", version=3, slice="global", target_state="CANARY"
        ),
    )
    args.update(kw)
    return verify_statement(stmt, **args)


def refusal(error: type[SignatureRefused], call: Callable[[], Any], *words: str) -> str:
    with pytest.raises(error) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg and msg, msg
    assert type(info.value) is error  # the most specific reason, not a parent's
    for w in words:
        assert w in msg, (w, msg)
    return msg


# ------------------------------------------------------------------------------ round trip


def test_round_trip_through_bytes_and_dict(approver_key: SigningKey) -> None:
    stmt = approval(approver_key, reason="looks good")
    data = stmt.to_bytes()
    assert SignedStatement.from_bytes(data) == stmt
    assert SignedStatement.from_obj(stmt.to_dict()) == stmt
    for form in (stmt, data, stmt.to_dict()):
        p = verify(form, approver_key)
        assert (p.kind, p.model, p.version, p.slice, p.target_state, p.epoch) == (
            SignedKind.approval,
            "ranker",
            3,
            "global",
            "CANARY",
            4,
        )
        assert p.signer == APPROVER and p.reason == "looks good"
    # Canonical bytes: sorted keys, compact, one timestamp spelling, a fresh nonce each time.
    assert data.startswith(b'{"key_id":"') and b" " not in data.replace(b"looks good", b"")
    assert b'"ts":"2026-03-01T12:00:00.000000Z"' in data
    assert approval(approver_key).payload.nonce != stmt.payload.nonce


def test_every_kind_signs_and_verifies_with_its_own_fields(approver_key: SigningKey) -> None:
    common = dict(signer=APPROVER, epoch=1, now=T0)
    cases: list[dict[str, Any]] = [
        dict(kind="override", model="m", version=1, slice="global", target_state="PROMOTED",
             reason="irreversible, accepted"),
        dict(kind="break_glass", model="m", version=1, slice="global", target_state="PROMOTED",
             reason="outage"),
        dict(kind="cascade_approval", model="dep", version=2, slice="global",
             target_state="ROLLED_BACK", cascade_root="m@7"),
        dict(kind="spec_amendment", model="m", spec_sha256="ab" * 32, reason="tier L2 -> L3"),
        dict(kind="unlock", team="ranking", reason="process review done"),
        dict(kind="service_action", model="m", action="rollback"),
    ]
    for case in cases:
        stmt = sign_statement(approver_key, **common, **case)
        p = verify(stmt, approver_key, now=T0, current_epoch=1, expect=None)
        assert p.kind.value == case["kind"]


@pytest.mark.parametrize(
    "kind, fields, missing",
    [
        ("spec_amendment", dict(model="m", reason="why"), "spec_sha256"),
        ("override", dict(model="m", version=1, slice="global", target_state="PROMOTED"),
         "reason"),
        ("unlock", dict(reason="x"), "team"),
        ("approval", dict(model="m", slice="global", target_state="CANARY"), "version"),
    ],
)
def test_a_kind_without_its_fields_cannot_be_signed(
    approver_key: SigningKey, kind: str, fields: dict[str, Any], missing: str
) -> None:
    with pytest.raises(SpecError, match=f"must name {missing}"):
        sign_statement(approver_key, kind=kind, signer=APPROVER, epoch=1, now=T0, **fields)


def test_an_unknown_kind_or_a_naive_clock_cannot_be_signed(approver_key: SigningKey) -> None:
    with pytest.raises(SpecError, match="unknown kind 'bless'; allowed: approval"):
        sign_statement(approver_key, kind="bless", signer=APPROVER, epoch=1, now=T0)
    with pytest.raises(SpecError, match="no timezone"):
        approval(approver_key, now=datetime(2026, 1, 1))


# ------------------------------------------------------------------------------ refusals


def test_forged_payload_altered_after_signing(approver_key: SigningKey) -> None:
    stmt = approval(approver_key)
    raised = stmt.payload.model_copy(update={"version": 4})
    forged = SignedStatement(payload=raised, key_id=stmt.key_id, signature=stmt.signature)
    refusal(
        ForgedSignature,
        lambda: verify(forged, approver_key, expect=None),
        "does not verify",
        "ranker@4",
    )


def test_forged_signature_by_another_key_under_the_approvers_key_id(
    approver_key: SigningKey, intruder_key: SigningKey
) -> None:
    mine = approval(intruder_key)
    claimed = SignedStatement(payload=mine.payload, key_id=approver_key.key_id,
                              signature=mine.signature)
    refusal(ForgedSignature, lambda: verify(claimed, approver_key), "another key signed it")


def test_unknown_key(approver_key: SigningKey, intruder_key: SigningKey) -> None:
    stmt = approval(intruder_key)
    refusal(UnknownKey, lambda: verify(stmt, approver_key), "not registered to actor 'rank-lead'")


def test_a_key_of_another_actor_is_not_the_signers(
    approver_key: SigningKey, intruder_key: SigningKey
) -> None:
    # The intruder signs in the approver's name with its own registered key.
    stmt = approval(intruder_key, signer=APPROVER)
    keys = [
        ActorKey("intruder", intruder_key.public_key),
        ActorKey(APPROVER, approver_key.public_key),
    ]
    refusal(
        UnknownKey, lambda: verify(stmt, approver_key, keys=keys), "belongs to actor 'intruder'"
    )


def test_self_approval(approver_key: SigningKey) -> None:
    stmt = approval(approver_key)
    refusal(SelfApproval, lambda: verify(stmt, approver_key, acting_actor=APPROVER),
            "also the acting actor")
    # An override is the actor's own signed decision, not an approval of someone else's.
    ovr = approval(approver_key, kind="override", target_state="PROMOTED", reason="accepted")
    assert verify(ovr, approver_key, acting_actor=APPROVER, expect=None).kind is SignedKind.override


def test_wrong_subject(approver_key: SigningKey) -> None:
    stmt = approval(approver_key)
    msg = refusal(
        WrongSubject,
        lambda: verify(stmt, approver_key, expect=Expected(model="ranker", version=5)),
        "version=3 (expected 5)",
    )
    assert "model" not in msg.split("another subject:")[1]


def test_wrong_epoch(approver_key: SigningKey) -> None:
    stmt = approval(approver_key, epoch=3)
    refusal(WrongEpoch, lambda: verify(stmt, approver_key), "epoch 3", "now at epoch 4")


def test_expired_and_from_the_future(approver_key: SigningKey) -> None:
    stmt = approval(approver_key)
    refusal(ExpiredSignature, lambda: verify(stmt, approver_key, now=T0 + timedelta(minutes=16)),
            "16m0s before now", "at most 15m0s old")
    # Exactly at the limit still verifies: the window is inclusive.
    verify(stmt, approver_key, now=T0 + timedelta(minutes=15))
    refusal(ExpiredSignature, lambda: verify(stmt, approver_key, now=T0 - timedelta(minutes=3)),
            "after now", "allowed clock skew: 2m0s")
    verify(stmt, approver_key, now=T0 - timedelta(minutes=2))
    verify(stmt, approver_key, now=T0 + timedelta(hours=2), max_age=timedelta(hours=3))


def test_replay_is_refused_and_a_refusal_consumes_nothing(approver_key: SigningKey) -> None:
    used: set[str] = set()

    def accept(stmt: SignedStatement, **kw: Any) -> None:
        p = verify(stmt, approver_key, nonce_seen=used.__contains__, **kw)
        used.add(p.nonce)  # what the registry does in the action's transaction

    stmt = approval(approver_key)
    # Refused for another reason first: its nonce was not consumed.
    with pytest.raises(WrongEpoch):
        accept(stmt, current_epoch=5)
    assert used == set()
    accept(stmt)
    refusal(ReplayedSignature, lambda: accept(stmt), "already used", stmt.payload.nonce[:12])
    # The same content freshly signed has a fresh nonce and is accepted.
    accept(approval(approver_key))
    assert len(used) == 2


def test_key_rotation_and_revocation(approver_key: SigningKey) -> None:
    new_key = generate_signing_key()
    revoked_at = T0 + timedelta(minutes=30)
    keys = [
        ActorKey(APPROVER, approver_key.public_key, revoked_at=revoked_at),
        ActorKey(APPROVER, new_key.public_key),
    ]
    old = approval(approver_key, now=revoked_at + timedelta(minutes=1))
    later = revoked_at + timedelta(minutes=2)
    refusal(RevokedKey, lambda: verify(old, approver_key, keys=keys, now=later), "was revoked at")
    fresh = approval(new_key, now=revoked_at + timedelta(minutes=1))
    assert verify(fresh, new_key, keys=keys, now=later).signer == APPROVER
    # Before the revocation the old key still works, and what it signed then stays valid
    # when the audit log is re-verified after the revocation.
    before = approval(approver_key)
    assert verify(before, approver_key, keys=keys).signer == APPROVER
    assert reverify_recorded(before, keys=keys, recorded_at=T0 + timedelta(seconds=5))
    refusal(
        RevokedKey,
        lambda: reverify_recorded(old, keys=keys, recorded_at=revoked_at + timedelta(minutes=1)),
        "before this statement was recorded",
    )
    refusal(
        ExpiredSignature,
        lambda: reverify_recorded(before, keys=keys, recorded_at=T0 + timedelta(minutes=20)),
        "20m0s before it was recorded",
    )


def test_every_single_bit_flip_is_refused(approver_key: SigningKey) -> None:
    """No byte of a statement is malleable: each flipped bit is refused, none verifies."""
    data = approval(approver_key, reason="ok").to_bytes()
    reasons: dict[str, int] = {}
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(SignatureRefused) as info:
                verify(bytes(bad), approver_key)
            assert "\n" not in str(info.value)
            reasons[info.value.reason] = reasons.get(info.value.reason, 0) + 1
    assert sum(reasons.values()) == len(data) * 8
    # Flips inside string values keep the JSON valid and reach the signature check.
    assert reasons["forged"] > 0 and reasons["malformed"] > 0, reasons


def test_non_canonical_encodings_are_refused(approver_key: SigningKey) -> None:
    stmt = approval(approver_key)
    spaced = stmt.to_bytes().replace(b'","', b'", "', 1)
    refusal(MalformedStatement, lambda: SignedStatement.from_bytes(spaced), "canonical form")
    upper = stmt.to_dict() | {"signature": stmt.signature.upper()}
    refusal(MalformedStatement, lambda: verify(upper, approver_key), "128 lowercase hex")
    coerced = stmt.to_dict()
    coerced["payload"] = dict(coerced["payload"], version="3")
    refusal(MalformedStatement, lambda: verify(coerced, approver_key), "payload.version")
    extra = stmt.to_dict()
    extra["payload"] = dict(extra["payload"], admin=True)
    refusal(MalformedStatement, lambda: verify(extra, approver_key), "admin")
    refusal(MalformedStatement, lambda: verify(b"\xff\xfe", approver_key), "not UTF-8 JSON")


def test_anchor_and_statement_signatures_do_not_cross(approver_key: SigningKey) -> None:
    """Domain separation: an anchor signature never passes as a statement one."""
    anchor = make_anchor({"model:x": (1, "a" * 64)}, approver_key, now=T0)
    stmt = approval(approver_key)
    swapped = SignedStatement(payload=stmt.payload, key_id=stmt.key_id,
                              signature=anchor.signature)
    refusal(ForgedSignature, lambda: verify(swapped, approver_key))


# ------------------------------------------------------------------------------ key files


def test_keypair_files_modes_and_loading(tmp_path: Path, approver_key: SigningKey) -> None:
    priv, pub = write_keypair(approver_key, tmp_path / "keys" / "alice")
    assert pub == tmp_path / "keys" / "alice.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in priv.read_bytes()
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    loaded = load_signing_key(priv)
    assert loaded.key_id == approver_key.key_id
    assert load_public_key(pub) == approver_key.public_key
    assert load_public_key(pub.read_bytes()) == approver_key.public_key
    assert load_public_key(pub.read_text()).key_id == approver_key.key_id
    # The fingerprint is the sha256 of the raw key, stable across encodings.
    import hashlib

    assert approver_key.key_id == hashlib.sha256(approver_key.public_key.raw).hexdigest()
    assert PublicKey.from_raw(approver_key.public_key.raw) == approver_key.public_key
    with pytest.raises(SpecError, match="already exists; refusing to overwrite"):
        write_keypair(generate_signing_key(), priv)
    os.chmod(priv, 0o644)
    with pytest.raises(SpecError, match=r"readable or writable by others \(mode 0644\)"):
        load_signing_key(priv)


def test_passphrase_and_service_key_from_environment_text(tmp_path: Path) -> None:
    key = generate_signing_key()
    priv, _ = write_keypair(key, tmp_path / "svc", passphrase=b"s3cret")
    assert b"ENCRYPTED" in priv.read_bytes()
    assert load_signing_key(priv, passphrase=b"s3cret").key_id == key.key_id
    with pytest.raises(SpecError, match="not a readable PEM private key"):
        load_signing_key(priv, passphrase=b"wrong")
    # A service key arrives as PEM text through an environment variable.
    assert SigningKey.from_pem(key.to_pem().decode()).key_id == key.key_id


def test_only_ed25519_keys(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(SpecError, match="not an Ed25519 key; allowed: Ed25519 only"):
        load_public_key(pem)
    with pytest.raises(SpecError, match="not a PEM public key"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SpecError, match="cannot read public key"):
        load_public_key(tmp_path / "absent.pub")


def test_verification_cost_benchmark_function_reports_its_figures() -> None:
    out = measure_verification_cost(50)
    assert out["approvals"] == 50
    assert out["verify_per_approval_p50_us"] > 0 and out["raw_ed25519_verify_p50_us"] > 0
    assert out["overhead_ratio_vs_raw"] >= 1.0  # the envelope includes the raw verify


# ------------------------------------------------------------------------------ anchors

M = "ranker"


@pytest.fixture
def audited(registry: Registry) -> Registry:
    add_people(registry)
    datasets(registry)
    registry.create_model(spec(M, tier=Tier.L0))
    for _ in range(3):
        v = version(registry, M).version
        registry.transition(M, v, State.PROMOTED, actor="ops")
    return registry


def heads(reg: Registry) -> dict[str, tuple[int, str]]:
    with reg.engine.connect() as conn:
        return {r.chain: (r.seq, r.hash) for r in conn.execute(text(
            "SELECT chain, seq, hash FROM audit_heads"))}


def hash_at(reg: Registry) -> Callable[[str, int], str | None]:
    def read(chain: str, seq: int) -> str | None:
        with reg.engine.connect() as conn:
            return conn.execute(
                text("SELECT hash FROM audit_log WHERE chain = :c AND seq = :s"),
                {"c": chain, "s": seq},
            ).scalar()

    return read


def as_attacker(reg: Registry, *statements: str, **params: Any) -> None:
    """Full database access: every guard trigger on the audit tables goes first."""
    with reg.engine.begin() as conn:
        if reg.engine.dialect.name == "sqlite":
            names = conn.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                "AND tbl_name IN ('audit_log', 'audit_heads')")).scalars().all()
            for name in names:
                conn.execute(text(f'DROP TRIGGER "{name}"'))
        else:
            rows = conn.execute(text(
                "SELECT tgname, tgrelid::regclass::text AS tbl FROM pg_trigger "
                "WHERE NOT tgisinternal AND tgrelid IN ('audit_log'::regclass, "
                "'audit_heads'::regclass)")).all()
            for name, tbl in rows:
                conn.execute(text(f'DROP TRIGGER "{name}" ON {tbl}'))
        for st in statements:
            conn.execute(text(st), params)


def chain_verifies(reg: Registry, chain: str) -> bool:
    """The hash chain's own check: every entry hashes right and links to the one before."""
    with reg.engine.connect() as conn:
        entries, problems = verify_chain(conn, chain)
    return entries > 0 and problems == []


def rewrite_chain(reg: Registry, chain: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit entries, then recompute every hash and link and the head: a consistent forgery."""
    as_attacker(reg)
    with reg.engine.begin() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            text("SELECT * FROM audit_log WHERE chain = :c ORDER BY seq"), {"c": chain})]
        prev = GENESIS
        for r in rows:
            edit(r)
            r["prev_hash"] = prev
            r["hash"] = entry_hash(r["chain"], r["seq"], r["model_id"], r["version"],
                                   r["action"], r["ts"], r["actor"], r["payload"], prev)
            conn.execute(
                text("UPDATE audit_log SET actor = :actor, payload = :payload, "
                     "prev_hash = :prev_hash, hash = :hash WHERE id = :id"), r)
            prev = r["hash"]
        conn.execute(text("UPDATE audit_heads SET seq = :s, hash = :h WHERE chain = :c"),
                     {"s": rows[-1]["seq"], "h": prev, "c": chain})


def test_anchor_catches_a_consistent_whole_chain_rewrite(audited: Registry) -> None:
    svc = generate_signing_key()
    service_keys = [ActorKey("svc:anchor", svc.public_key)]
    anchor = make_anchor(heads(audited), svc, now=T0)
    stored = anchor.to_bytes()  # what goes to the artifact store
    assert SignedAnchor.from_bytes(stored) == anchor
    assert check_anchor(stored, service_keys=service_keys, current_heads=heads(audited),
                        hash_at=hash_at(audited)) == []

    def who_did_it(row: dict[str, Any]) -> None:
        if row["actor"] == "ops":
            row["actor"] = "someone-else"

    rewrite_chain(audited, f"model:{M}", who_did_it)
    assert chain_verifies(audited, f"model:{M}")  # consistent: the chain alone cannot tell
    assert {e.actor for e in audited.audit_entries(M)} >= {"someone-else"}
    problems = check_anchor(stored, service_keys=service_keys, current_heads=heads(audited),
                            hash_at=hash_at(audited))
    assert [(p.chain, p.kind) for p in problems] == [(f"model:{M}", "REWRITTEN")]
    assert "the chain was rewritten" in problems[0].detail


def test_anchor_checks_a_grown_chain_at_the_anchored_seq(audited: Registry) -> None:
    svc = generate_signing_key()
    keys = [ActorKey("svc:anchor", svc.public_key)]
    anchor = make_anchor(heads(audited), svc, now=T0)
    anchored_seq = heads(audited)[f"model:{M}"][0]
    v = version(audited, M).version  # legitimate growth after the checkpoint
    audited.transition(M, v, State.PROMOTED, actor="ops")
    assert heads(audited)[f"model:{M}"][0] > anchored_seq
    assert check_anchor(anchor, service_keys=keys, current_heads=heads(audited),
                        hash_at=hash_at(audited)) == []

    # Rewriting only the entries before the anchored seq, then re-linking the rest.
    def first_only(row: dict[str, Any]) -> None:
        if row["seq"] == 1:
            row["payload"] = '{"forged":true}'

    rewrite_chain(audited, f"model:{M}", first_only)
    assert chain_verifies(audited, f"model:{M}")
    problems = check_anchor(anchor, service_keys=keys, current_heads=heads(audited),
                            hash_at=hash_at(audited))
    assert [(p.kind, p.anchored_seq) for p in problems] == [("REWRITTEN", anchored_seq)]


def test_anchor_catches_a_chain_that_went_backwards_or_vanished(audited: Registry) -> None:
    svc = generate_signing_key()
    keys = [ActorKey("svc:anchor", svc.public_key)]
    before = heads(audited)
    anchor = make_anchor(before, svc, now=T0)
    seq, _ = before[f"model:{M}"]
    # Drop the last two entries and point the head at what is now the last one.
    as_attacker(audited, "DELETE FROM audit_log WHERE chain = :c AND seq > :s",
                c=f"model:{M}", s=seq - 2)
    as_attacker(audited, "UPDATE audit_heads SET seq = :s, hash = (SELECT hash FROM audit_log "
                "WHERE chain = :c AND seq = :s) WHERE chain = :c", c=f"model:{M}", s=seq - 2)
    assert chain_verifies(audited, f"model:{M}")
    # And remove the registry-wide chain outright.
    as_attacker(audited, "DELETE FROM audit_log WHERE chain = '_registry'",
                "DELETE FROM audit_heads WHERE chain = '_registry'")
    problems = check_anchor(anchor, service_keys=keys, current_heads=heads(audited),
                            hash_at=hash_at(audited))
    got = {(p.chain, p.kind, p.current_seq) for p in problems}
    assert got == {("_registry", "MISSING", None), (f"model:{M}", "WENT_BACKWARDS", seq - 2)}
    assert all(isinstance(p, AnchorProblem) and "\n" not in p.detail for p in problems)


def test_a_forged_or_unknown_anchor_is_refused(approver_key: SigningKey) -> None:
    svc = generate_signing_key()
    keys = [ActorKey("svc:anchor", svc.public_key)]
    anchor = make_anchor({"model:a": (3, "c" * 64)}, svc, now=T0)
    tampered = anchor.to_bytes().replace(b'"seq":3', b'"seq":2')
    refusal(ForgedSignature, lambda: check_anchor(
        tampered, service_keys=keys, current_heads={}, hash_at=lambda c, s: None),
        "checkpoint was altered")
    other = make_anchor({"model:a": (3, "c" * 64)}, approver_key, now=T0)
    refusal(UnknownKey, lambda: check_anchor(
        other, service_keys=keys, current_heads={}, hash_at=lambda c, s: None),
        "not a registered service key")
    revoked = [ActorKey("svc:anchor", svc.public_key, revoked_at=T0 - timedelta(days=1))]
    refusal(RevokedKey, lambda: check_anchor(
        anchor, service_keys=revoked, current_heads={}, hash_at=lambda c, s: None))
    chained = make_anchor({"model:a": (4, "d" * 64)}, svc, now=T0, prev=anchor.sha256)
    assert chained.checkpoint.prev == anchor.sha256
