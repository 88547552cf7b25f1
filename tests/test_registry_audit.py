"""The audit log: one entry per mutation, append-only in the database, tamper-evident.

The tamper tests play an attacker who can bypass the append-only triggers: they drop the
triggers in the test's own database and then rewrite history with raw SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import exc, text
from test_registry_kit import (
    add_people,
    bootstrap_prod,
    contract,
    datasets,
    key_of,
    new_model,
    refused,
    spec,
    teams,
    version,
    weights_hash,
)

from modelops.audit import GENESIS, REGISTRY_CHAIN, canonical_json, entry_hash
from modelops.errors import IllegalTransition, NotFoundError
from modelops.registry import Registry
from modelops.spec import RollbackClass, State, Tier

M = "ranker"
S = State


def one_entry(
    reg: Registry, model: str | None, action: str, call: Callable[[], Any]
) -> dict[str, Any]:
    """Run a mutation and prove it appended exactly one entry, to the right chain."""
    total = reg.row_counts()["audit_log"]
    try:
        chain = reg.audit_entries(model)
    except NotFoundError:  # the call creates the model and its chain
        chain = []
    out = call()
    assert reg.row_counts()["audit_log"] == total + 1
    after = reg.audit_entries(model)
    assert len(after) == len(chain) + 1
    entry = after[-1]
    assert (entry.action, entry.seq) == (action, len(chain) + 1)
    assert entry.chain == (f"model:{model}" if model else REGISTRY_CHAIN)
    return {"result": out, "entry": entry}


def no_entry(reg: Registry, call: Callable[[], Any]) -> Any:
    """Run a redelivered (idempotent) call and prove it changed nothing at all."""
    before = reg.row_counts()
    out = call()
    assert reg.row_counts() == before
    return out


# ---------------------------------------------------------------------------- one per mutation


def test_every_mutation_appends_exactly_one_entry(registry: Registry) -> None:
    r = registry
    one_entry(r, None, "add_team", lambda: r.add_team("ranking"))
    no_entry(r, lambda: r.add_team("ranking"))
    one_entry(r, None, "add_team", lambda: r.add_team("safety"))
    one_entry(r, None, "add_actor", lambda: r.add_actor("rank-lead", "ranking"))
    for name, team in (("rank-eng", "ranking"), ("safety-lead", "safety"), ("ops", "ranking")):
        r.add_actor(name, team)
    no_entry(r, lambda: r.add_actor("rank-lead", "ranking"))
    pub = key_of("rank-lead").public_key
    one_entry(r, None, "add_key", lambda: r.add_key("rank-lead", pub))
    no_entry(r, lambda: r.add_key("rank-lead", pub))
    for name in ("rank-eng", "safety-lead", "ops"):
        r.add_key(name, key_of(name).public_key)
    e = one_entry(r, None, "register_dataset", lambda: r.register_dataset("clicks", 1, "s3://c"))
    assert e["entry"].payload["uri"] == "s3://c"
    no_entry(r, lambda: r.register_dataset("clicks", 1, "s3://c"))
    one_entry(
        r,
        None,
        "register_dataset",
        lambda: r.register_dataset("clicks-eval", 1, "s3://e", kind="eval_set"),
    )
    one_entry(r, None, "register_dataset", lambda: r.register_dataset("extra", 1, "s3://x"))
    one_entry(r, None, "register_contract", lambda: r.register_contract(contract()))
    no_entry(r, lambda: r.register_contract(contract()))

    s = spec(M, tier=Tier.L2, rollback_class=RollbackClass.IRREVERSIBLE, slices=["eu", "us"])
    one_entry(r, M, "register_model", lambda: r.create_model(s))
    no_entry(r, lambda: r.create_model(s))
    one_entry(r, M, "add_dependent", lambda: r.add_dependent(M, "feed", actor="ops"))
    no_entry(r, lambda: r.add_dependent(M, "feed", actor="ops"))

    def register(label: str) -> int:
        return r.register_version(
            M,
            weights_hash=weights_hash(label),
            weights_uri=f"file:///{label}",
            training_run_id=label,
            training_data="clicks@1",
            eval_set="clicks-eval@1",
        ).version

    v1 = one_entry(r, M, "register_version", lambda: register("w1"))["result"]
    no_entry(r, lambda: register("w1"))
    # One gate result moves both slices and is one entry.
    one_entry(
        r, M, "gate_result", lambda: r.record_gate_result(M, v1, passed=True, results={"a": 1})
    )
    no_entry(r, lambda: r.record_gate_result(M, v1, passed=True, results={"a": 1}))

    for sl in ("eu", "us"):
        e = one_entry(
            r,
            M,
            "approval",
            lambda sl=sl: r.approve(M, v1, actor="rank-lead", key=key_of("rank-lead"), slice=sl),
        )
        signed = e["entry"].payload.pop("statement")
        assert (signed["payload"]["signer"], signed["payload"]["slice"]) == ("rank-lead", sl)
        assert e["entry"].payload == {
            "slice": sl,
            "from": "OFFLINE_PASSED",
            "to": "PROMOTED",
            "team": "ranking",
        }
        one_entry(
            r,
            M,
            "override",
            lambda sl=sl: r.override(
                M, v1, actor="safety-lead", key=key_of("safety-lead"), reason="ok", slice=sl
            ),
        )
        e = one_entry(
            r, M, "transition", lambda sl=sl: r.transition(M, v1, S.PROMOTED, actor="ops", slice=sl)
        )
        assert (e["entry"].actor, e["entry"].version) == ("ops", v1)

    one_entry(r, M, "pin", lambda: r.pin(M, v1, "extra@1", role="extra", actor="ops"))
    no_entry(r, lambda: r.pin(M, v1, "extra@1", role="extra", actor="ops"))
    one_entry(r, M, "unpin", lambda: r.unpin(M, v1, "extra@1", role="extra", actor="ops"))

    # Promotion that deprecates the old prod: one entry for both rows.
    v2 = register("w2")
    r.record_gate_result(M, v2, passed=True, results={})
    r.transition(M, v2, S.APPROVED_SHADOW, actor="ops", slice="eu")
    r.transition(M, v2, S.SHADOW, actor="ops", slice="eu")
    r.approve(M, v2, actor="rank-eng", key=key_of("rank-eng"), slice="eu")
    r.transition(M, v2, S.APPROVED_CANARY, actor="ops", slice="eu")
    r.transition(M, v2, S.CANARY, actor="ops", slice="eu")
    r.approve(M, v2, actor="rank-eng", key=key_of("rank-eng"), slice="eu")
    r.override(M, v2, actor="safety-lead", key=key_of("safety-lead"), reason="ok", slice="eu")
    e = one_entry(
        r, M, "transition", lambda: r.transition(M, v2, S.PROMOTED, actor="ops", slice="eu")
    )
    assert e["entry"].payload["deprecated"] == v1
    # A rollback that restores the old prod: one entry for both rows.
    e = one_entry(r, M, "rollback", lambda: r.rollback(M, actor="ops", slice="eu"))
    assert e["entry"].payload["restored"] == v1
    # A candidate's rollback.
    v3 = register("w3")
    r.record_gate_result(M, v3, passed=True, results={})
    r.transition(M, v3, S.APPROVED_SHADOW, actor="ops", slice="us")
    one_entry(r, M, "rollback", lambda: r.transition(M, v3, S.ROLLED_BACK, actor="o", slice="us"))
    # Archiving the last slice releases the pins in the same entry.
    r.transition(M, v3, S.ARCHIVED, actor="ops", slice="us")
    e = one_entry(
        r, M, "transition", lambda: r.transition(M, v3, S.ARCHIVED, actor="o", slice="eu")
    )
    assert sorted(e["entry"].payload["unpinned"]) == [
        "clicks-eval@1 (eval_set)",
        "clicks@1 (training_data)",
    ]
    one_entry(r, None, "delete_dataset", lambda: r.delete_dataset("extra", 1, actor="ops"))

    # Refusals append nothing (refused() compares every table, audit_log included).
    refused(r, IllegalTransition, lambda: r.transition(M, v3, S.SHADOW, actor="o", slice="eu"))

    # The chains are contiguous and verify.
    for chain in (M, None):
        entries = r.audit_entries(chain)
        assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    report = r.verify_audit()
    assert report.ok, report.problems
    assert report.chains == 2
    assert report.entries == r.row_counts()["audit_log"]


def test_entries_are_hash_chained(registry: Registry) -> None:
    teams(registry)
    datasets(registry)
    registry.create_model(spec())
    version(registry)
    prev = GENESIS
    with registry.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT * FROM audit_log WHERE chain = :c ORDER BY seq"), {"c": f"model:{M}"}
        ).all()
    assert [r.action for r in rows] == ["register_model", "register_version", "gate_result"]
    for r in rows:
        assert r.prev_hash == prev
        assert r.hash == entry_hash(
            r.chain, r.seq, r.model_id, r.version, r.action, r.ts, r.actor, r.payload, prev
        )
        prev = r.hash


# ---------------------------------------------------------------------------- append-only


@pytest.fixture
def audited(registry: Registry) -> Registry:
    add_people(registry)
    datasets(registry)
    registry.create_model(spec(tier=Tier.L0))
    for _ in range(3):
        v = version(registry).version
        registry.transition(M, v, S.PROMOTED, actor="ops")
    assert [e.seq for e in registry.audit_entries(M)] == list(range(1, 11))
    return registry


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET payload = '{}' WHERE seq = 2",
        "UPDATE audit_log SET actor = 'nobody'",
        "DELETE FROM audit_log WHERE seq = 10",
        "DELETE FROM audit_log",
    ],
)
def test_the_database_rejects_updates_and_deletes(audited: Registry, sql: str) -> None:
    before = audited.audit_entries(M)
    with pytest.raises(exc.DBAPIError, match="audit_log is append-only"):
        with audited.engine.begin() as conn:
            conn.execute(text(sql))
    assert audited.audit_entries(M) == before
    assert audited.verify_audit().ok


def heads(reg: Registry) -> list[tuple[str, int, str]]:
    with reg.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT * FROM audit_heads ORDER BY chain"))]


HEAD_OF = "(SELECT {col} FROM audit_log WHERE chain = 'model:ranker' AND seq = {seq})"


REWIND = "SELECT chain, seq, hash FROM audit_log WHERE chain = 'model:ranker' AND seq = 9"


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM audit_heads WHERE chain = 'model:ranker'",
        "DELETE FROM audit_heads",
        # Back to an earlier entry that exists: hides the entries after it.
        "UPDATE audit_heads SET seq = 9, hash = "
        + HEAD_OF.format(col="hash", seq=9)
        + " WHERE chain = 'model:ranker'",
        "UPDATE audit_heads SET hash = '" + "0" * 64 + "' WHERE chain = 'model:ranker'",
        "UPDATE audit_heads SET seq = seq + 1 WHERE chain = 'model:ranker'",
        "UPDATE audit_heads SET chain = 'model:other' WHERE chain = 'model:ranker'",
        "INSERT INTO audit_heads (chain, seq, hash) VALUES ('model:x', 1, 'ab')",
        # Emptying the table in one statement: TRUNCATE, or SQLite's nearest, DELETE.
        {"postgresql": "TRUNCATE audit_heads", "sqlite": "DELETE FROM audit_heads WHERE 1"},
        # An upsert back to an earlier entry. SQLite's REPLACE deletes the row it replaces
        # without firing the delete trigger; PostgreSQL's ON CONFLICT fires the update one.
        {
            "sqlite": f"INSERT OR REPLACE INTO audit_heads (chain, seq, hash) {REWIND}",
            "postgresql": f"INSERT INTO audit_heads (chain, seq, hash) {REWIND} "
            "ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
        },
        # The same against an entry of the log itself.
        {
            "sqlite": "INSERT OR REPLACE INTO audit_log SELECT * FROM audit_log "
            "WHERE chain = 'model:ranker' AND seq = 10",
            "postgresql": "INSERT INTO audit_log SELECT * FROM audit_log "
            "WHERE chain = 'model:ranker' AND seq = 10 "
            "ON CONFLICT (id) DO UPDATE SET actor = 'nobody'",
        },
    ],
)
def test_audit_heads_move_forward_only(audited: Registry, sql: str | dict[str, str]) -> None:
    statement = sql if isinstance(sql, str) else sql[audited.engine.dialect.name]
    before = (heads(audited), audited.audit_entries(M))
    with pytest.raises(exc.DBAPIError, match="(audit_heads moves forward only|append-only)"):
        with audited.engine.begin() as conn:
            conn.execute(text(statement))
    assert (heads(audited), audited.audit_entries(M)) == before
    assert audited.verify_audit().ok


def test_a_head_may_jump_forward_over_entries_appended_together(audited: Registry) -> None:
    """Bulk appends (the benchmark's history top-up) move a head several entries at once."""
    last = audited.audit_entries(M)[-1]
    prev, rows = last.hash, []
    for seq in (11, 12):
        h = entry_hash(f"model:{M}", seq, M, None, "note", "t", "ops", "{}", prev)
        rows.append({"seq": seq, "prev": prev, "h": h})
        prev = h
    with audited.engine.begin() as conn:
        for r in rows:
            conn.execute(
                text(
                    "INSERT INTO audit_log (chain, seq, model_id, version, action, ts, actor, "
                    "payload, prev_hash, hash) VALUES (:c, :seq, :m, NULL, 'note', 't', 'ops', "
                    "'{}', :prev, :h)"
                ),
                {"c": f"model:{M}", "m": M, **r},
            )
        conn.execute(
            text("UPDATE audit_heads SET seq = 12, hash = :h WHERE chain = :c"),
            {"h": prev, "c": f"model:{M}"},
        )
    assert [e.seq for e in audited.audit_entries(M)][-3:] == [10, 11, 12]
    assert audited.verify_audit(M).ok


def test_postgres_rejects_truncate(pg_url: str, clock: Any) -> None:
    # TRUNCATE is PostgreSQL's own statement (SQLite has only DELETE), so this runs there.
    with Registry(pg_url, clock=clock) as reg:
        reg.add_team("ranking")
        reg.add_actor("rank-lead", "ranking")
        with pytest.raises(exc.DBAPIError, match="audit_log is append-only"):
            with reg.engine.begin() as conn:
                conn.execute(text("TRUNCATE audit_log"))
        assert [e.action for e in reg.audit_entries(None)] == ["add_team", "add_actor"]
        assert reg.verify_audit().ok


# ---------------------------------------------------------------------------- tampering


def drop_triggers(reg: Registry) -> None:
    """What an attacker with DDL rights does first: every guard on the audit tables goes."""
    with reg.engine.begin() as conn:
        if reg.engine.dialect.name == "sqlite":
            names = conn.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name IN ('audit_log', 'audit_heads')"
                )
            ).scalars()
            for name in list(names):
                conn.execute(text(f'DROP TRIGGER "{name}"'))
        else:
            rows = conn.execute(
                text(
                    "SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal "
                    "AND tgrelid IN ('audit_log'::regclass, 'audit_heads'::regclass)"
                )
            ).all()
            for name, table in rows:
                conn.execute(text(f'DROP TRIGGER "{name}" ON {table}'))


def sql(reg: Registry, *statements: str, **params: Any) -> None:
    with reg.engine.begin() as conn:
        for st in statements:
            conn.execute(text(st), params)


@pytest.fixture
def tampered(audited: Registry) -> Registry:
    report = audited.verify_audit()
    assert report.ok and report.problems == []
    assert (report.chains, report.entries) == (2, audited.row_counts()["audit_log"])
    drop_triggers(audited)
    return audited


def _only_problem(reg: Registry, kind: str) -> Any:
    for report in (reg.verify_audit(M), reg.verify_audit()):
        assert not report.ok
        assert len(report.problems) == 1, report.problems
        p = report.problems[0]
        assert (p.chain, p.kind) == (f"model:{M}", kind)
    # The registry-wide chain is untouched and still verifies on its own.
    assert reg.verify_audit(None).problems == reg.verify_audit(M).problems
    return p


def test_a_clean_registry_verifies(audited: Registry) -> None:
    report = audited.verify_audit(M)
    assert report.ok and (report.chains, report.entries) == (1, 10)


def test_an_edited_payload_is_named(tampered: Registry) -> None:
    target = tampered.audit_entries(M)[4]
    sql(
        tampered,
        "UPDATE audit_log SET payload = :p WHERE id = :i",
        p='{"forged":true}',
        i=target.id,
    )
    p = _only_problem(tampered, "EDITED")
    assert (p.entry_id, p.seq) == (target.id, 5)
    assert f"entry id {target.id} (seq 5, {target.action} ranker@{target.version})" in p.detail
    assert "content was edited" in p.detail


def test_an_edit_with_a_recomputed_hash_breaks_the_link(tampered: Registry) -> None:
    target = tampered.audit_entries(M)[4]
    with tampered.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM audit_log WHERE id = :i"), {"i": target.id}).one()
    forged = '{"forged":true}'
    h = entry_hash(
        row.chain, row.seq, row.model_id, row.version, row.action, row.ts, row.actor, forged,
        row.prev_hash,
    )  # fmt: skip
    sql(
        tampered,
        "UPDATE audit_log SET payload = :p, hash = :h WHERE id = :i",
        p=forged,
        h=h,
        i=row.id,
    )
    report = tampered.verify_audit(M)
    assert not report.ok
    assert report.problems[0].seq == 6  # the next entry no longer links to it
    assert "does not link to the entry before it" in report.problems[0].detail


def test_a_deleted_middle_entry_is_named(tampered: Registry) -> None:
    entries = tampered.audit_entries(M)
    sql(tampered, "DELETE FROM audit_log WHERE id = :i", i=entries[3].id)
    p = _only_problem(tampered, "DELETED")
    assert (p.entry_id, p.seq) == (entries[4].id, 5)
    assert "follows a gap: seq 4..4 missing" in p.detail


def test_reordered_entries_are_named(tampered: Registry) -> None:
    entries = tampered.audit_entries(M)
    a, b = entries[2].id, entries[3].id  # seq 3 and seq 4 trade places in storage order
    sql(
        tampered,
        "UPDATE audit_log SET id = -1 WHERE id = :a",
        "UPDATE audit_log SET id = :a WHERE id = :b",
        "UPDATE audit_log SET id = :b WHERE id = -1",
        a=a,
        b=b,
    )
    p = _only_problem(tampered, "REORDERED")
    assert (p.entry_id, p.seq) == (a, 4)
    assert "appears before seq 3" in p.detail


def test_a_removed_last_entry_is_truncation(tampered: Registry) -> None:
    entries = tampered.audit_entries(M)
    sql(tampered, "DELETE FROM audit_log WHERE id = :i", i=entries[-1].id)
    p = _only_problem(tampered, "TRUNCATED")
    assert p.seq == 10 and p.entry_id is None
    assert "the head records seq 10 but the chain ends at seq 9" in p.detail


# ------------------------------------------------------------------------ what chains replay to


def kinds(reg: Registry, model: str | None = M) -> list[tuple[str, str]]:
    """(kind, detail) of every problem, for one model's verify and for the whole registry's."""
    one = reg.verify_audit(model) if model is not None else None
    whole = reg.verify_audit()
    if one is not None:
        assert [p for p in whole.problems if p.chain == f"model:{model}"] == one.problems
    return [(p.kind, p.detail) for p in whole.problems]


def test_a_model_whose_chain_and_head_were_deleted_is_named(tampered: Registry) -> None:
    sql(
        tampered,
        "DELETE FROM audit_log WHERE chain = :c",
        "DELETE FROM audit_heads WHERE chain = :c",
        c=f"model:{M}",
    )
    assert kinds(tampered) == [
        (
            "MISSING",
            f"model:{M}: model {M!r} exists but has no audit chain (no entries and no head): "
            "its history was deleted",
        )
    ]


def test_a_deleted_head_row_is_named(tampered: Registry) -> None:
    sql(tampered, "DELETE FROM audit_heads WHERE chain = :c", c=f"model:{M}")
    assert kinds(tampered) == [
        (
            "MISSING",
            f"model:{M}: the head row is missing, though the chain has 10 entries: "
            "audit_heads was edited",
        )
    ]


def test_a_version_whose_entries_were_removed_is_named(tampered: Registry) -> None:
    """Its register_version entry removed and the chain re-linked: no link is broken."""
    rewrite_without(tampered, lambda e: e.version == 3)
    problems = kinds(tampered)
    assert ("MISSING", f"model:{M}: {M}@3 exists but its chain has no register_version entry") in (
        problems
    )
    assert (
        "MISMATCH",
        f"model:{M}: {M}@3 on slice 'global' is PROMOTED in slice_states, but its chain never "
        "registered it",
    ) in problems


def rewrite_without(reg: Registry, drop: Any) -> None:
    """Remove entries and recompute every later hash, link and the head: no broken link."""
    kept = [e for e in reg.audit_entries(M) if not drop(e)]
    with reg.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE chain = :c"), {"c": f"model:{M}"})
        prev = GENESIS
        for seq, e in enumerate(kept, start=1):
            payload = canonical_json(e.payload)
            h = entry_hash(e.chain, seq, e.model_id, e.version, e.action, e.ts, e.actor,
                           payload, prev)  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO audit_log (chain, seq, model_id, version, action, ts, actor, "
                    "payload, prev_hash, hash) VALUES (:c, :s, :m, :v, :a, :t, :u, :p, :prev, :h)"
                ),
                {"c": e.chain, "s": seq, "m": e.model_id, "v": e.version, "a": e.action,
                 "t": e.ts, "u": e.actor, "p": payload, "prev": prev, "h": h},  # fmt: skip
            )
            prev = h
        conn.execute(
            text("UPDATE audit_heads SET seq = :s, hash = :h WHERE chain = :c"),
            {"s": len(kept), "h": prev, "c": f"model:{M}"},
        )


def test_a_forged_approval_appended_with_its_head_is_named(audited: Registry) -> None:
    """With every trigger in place: an append and a forward head move are allowed, but no
    approval row backs the forged entry."""
    last = audited.audit_entries(M)[-1]
    payload = canonical_json(
        {"slice": "global", "from": "PROMOTED", "to": "ROLLED_BACK", "team": "safety"}
    )
    ts = "2026-01-01T00:00:01+00:00"
    h = entry_hash(f"model:{M}", 11, M, 3, "approval", ts, "safety-lead", payload, last.hash)
    with audited.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_log (chain, seq, model_id, version, action, ts, actor, "
                "payload, prev_hash, hash) VALUES (:c, 11, :m, 3, 'approval', :t, "
                "'safety-lead', :p, :prev, :h)"
            ),
            {"c": f"model:{M}", "m": M, "t": ts, "p": payload, "prev": last.hash, "h": h},
        )
        conn.execute(
            text("UPDATE audit_heads SET seq = 11, hash = :h WHERE chain = :c"),
            {"h": h, "c": f"model:{M}"},
        )
    assert kinds(audited) == [
        (
            "MISMATCH",
            f"model:{M}: approval of {M}@3 -> ROLLED_BACK on slice 'global' by safety-lead "
            "(safety) is in the audit chain but not in the table",
        ),
        ("UNSIGNED", f"model:{M}: seq 11 (approval {M}@3) carries no signature"),
    ]


def test_a_state_set_directly_is_named(audited: Registry) -> None:
    sql(
        audited,
        "UPDATE slice_states SET state = 'DEPRECATED' WHERE version = 3",
        "UPDATE slice_states SET state = 'PROMOTED' WHERE version = 1",
    )
    assert kinds(audited) == [
        (
            "MISMATCH",
            f"model:{M}: {M}@1 on slice 'global' is PROMOTED in slice_states, but its audit "
            "chain replays to DEPRECATED",
        ),
        (
            "MISMATCH",
            f"model:{M}: {M}@3 on slice 'global' is DEPRECATED in slice_states, but its audit "
            "chain replays to PROMOTED",
        ),
        (
            "MISMATCH",
            f"model:{M}: the desired state of slice 'global' is not what its slice states "
            "derive: prod_version 3, not 1; warm_versions [2, 3], not [1, 2]",
        ),
    ]


def test_a_percent_or_desired_state_set_directly_is_named(registry: Registry) -> None:
    new_model(registry, tier=Tier.L1)
    bootstrap_prod(registry)
    v = version(registry).version
    for st, pct in ((S.APPROVED_SHADOW, None), (S.SHADOW, None), (S.APPROVED_CANARY, None),
                    (S.CANARY, 5)):  # fmt: skip
        registry.transition(M, v, st, actor="ops", percent=pct)
    assert registry.verify_audit().ok
    sql(registry, "UPDATE slice_states SET percent = 10 WHERE version = 2")
    assert kinds(registry) == [
        (
            "MISMATCH",
            f"model:{M}: {M}@2 on slice 'global' is CANARY (10%) in slice_states, but its audit "
            "chain replays to CANARY (5%)",
        ),
        (
            "MISMATCH",
            f"model:{M}: the desired state of slice 'global' is not what its slice states "
            "derive: canary {'version': 2, 'percent': 5}, not {'version': 2, 'percent': 10}",
        ),
    ]
    sql(registry, "UPDATE slice_states SET percent = 5 WHERE version = 2")
    sql(registry, "UPDATE model_slices SET generation = generation + 1")
    assert [k for k, _ in kinds(registry)] == ["MISMATCH"]


def test_a_team_membership_or_spec_changed_directly_is_named(audited: Registry) -> None:
    sql(audited, "UPDATE actors SET team = 'safety' WHERE name = 'rank-eng'")
    sql(audited, "INSERT INTO teams (name, created_at) VALUES ('ghosts', 'now')")
    with audited.engine.connect() as conn:
        raw = conn.execute(text("SELECT spec_json FROM models")).scalar_one()
    sql(audited, "UPDATE models SET spec_json = :s", s=raw.replace('"L0"', '"L1"'))
    assert kinds(audited) == [
        ("MISMATCH", "_registry: team 'ghosts' has no add_team entry"),
        (
            "MISMATCH",
            "_registry: actor 'rank-eng' is in team 'safety', but was added to team 'ranking'",
        ),
        (
            "MISMATCH",
            f"model:{M}: model {M!r}: the stored spec differs from its register_model entry "
            "(seq 1) in tier",
        ),
    ]

