"""The tamper-evident audit log: one hash chain per model (and one for registry-wide events).

Per-model chains let `audit verify` check one model without reading the whole log, and
let transitions on different models append without contending for one chain head.
The database rejects UPDATE and DELETE on audit_log and lets a head only move forward
(migration triggers); the chain makes an edit, a deletion or a reordering by someone who
bypasses the triggers visible.

The registry's tables are what the chains replay to: `cross_check_model` and
`cross_check_registry` replay an intact chain and name every row that disagrees with it (a
state set by hand, an approval or a team membership no entry records, a model or version
whose chain is gone). What they cannot see is a consistent rewrite of a chain together with
the tables; the signed head anchors are for that.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, bindparam, insert, select, update

from modelops.desired import DesiredState, SliceRow, derive
from modelops.spec import State
from modelops.store.tables import (
    actors,
    approvals,
    audit_heads,
    audit_log,
    datasets,
    feature_contracts,
    model_slices,
    model_versions,
    models,
    overrides,
    slice_states,
    teams,
)

__all__ = [
    "GENESIS",
    "REGISTRY_CHAIN",
    "AuditEntry",
    "AuditProblem",
    "AuditReport",
    "canonical_json",
    "entry_hash",
    "append",
    "verify_chain",
    "check_chain",
    "chain_for",
    "cross_check_model",
    "cross_check_registry",
    "missing_chain",
]

GENESIS = "0" * 64
REGISTRY_CHAIN = "_registry"


_Q_HEAD = (
    select(audit_heads.c.seq, audit_heads.c.hash)
    .where(audit_heads.c.chain == bindparam("c"))
    .with_for_update()
)
_I_ENTRY = insert(audit_log)
_U_HEAD = (
    update(audit_heads)
    .where(audit_heads.c.chain == bindparam("c"))
    .values(seq=bindparam("seq"), hash=bindparam("hash"))
)


def chain_for(model_id: str | None) -> str:
    return f"model:{model_id}" if model_id else REGISTRY_CHAIN


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(
    chain: str,
    seq: int,
    model_id: str | None,
    version: int | None,
    action: str,
    ts: str,
    actor: str,
    payload: str,
    prev_hash: str,
) -> str:
    parts = [chain, str(seq), model_id or "", str(version or ""), action, ts, actor, payload]
    body = "\x1f".join(parts) + "\x1e" + prev_hash
    return hashlib.sha256(body.encode()).hexdigest()


class AuditEntry(BaseModel):
    id: int
    chain: str
    seq: int
    model_id: str | None
    version: int | None
    action: str
    ts: str
    actor: str
    payload: dict[str, Any]
    hash: str


class AuditProblem(BaseModel):
    chain: str
    seq: int | None
    entry_id: int | None
    kind: str  # EDITED, DELETED, REORDERED, TRUNCATED; MISSING, MISMATCH (cross-checks)
    detail: str


class AuditReport(BaseModel):
    chains: int
    entries: int
    problems: list[AuditProblem]

    @property
    def ok(self) -> bool:
        return not self.problems


def append(
    conn: Connection,
    *,
    model_id: str | None,
    version: int | None,
    action: str,
    ts: datetime,
    actor: str,
    payload: dict[str, Any],
) -> int:
    """Append one entry inside the caller's transaction; returns its id.

    The head row is locked (FOR UPDATE on PostgreSQL; SQLite already holds the write lock)
    so two writers to one chain cannot both claim the same seq.
    """
    chain = chain_for(model_id)
    head = conn.execute(_Q_HEAD, {"c": chain}).first()
    seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
    ts_s = ts.isoformat()
    body = canonical_json(payload)
    h = entry_hash(chain, seq, model_id, version, action, ts_s, actor, body, prev)
    new_id = conn.execute(
        _I_ENTRY,
        {
            "chain": chain,
            "seq": seq,
            "model_id": model_id,
            "version": version,
            "action": action,
            "ts": ts_s,
            "actor": actor,
            "payload": body,
            "prev_hash": prev,
            "hash": h,
        },
    ).inserted_primary_key[0]
    if head:
        conn.execute(_U_HEAD, {"c": chain, "seq": seq, "hash": h})
    else:
        conn.execute(insert(audit_heads).values(chain=chain, seq=seq, hash=h))
    return int(new_id)


def verify_chain(conn: Connection, chain: str) -> tuple[int, list[AuditProblem]]:
    """Recompute one chain in storage order and name the first entry that does not fit."""
    rows, problems = check_chain(conn, chain)
    return len(rows), problems


def check_chain(conn: Connection, chain: str) -> tuple[list[Any], list[AuditProblem]]:
    """The chain's rows in storage order, and what is wrong with their hashes, links or head."""
    rows = conn.execute(
        select(audit_log).where(audit_log.c.chain == chain).order_by(audit_log.c.id)
    ).all()
    problems: list[AuditProblem] = []
    prev = GENESIS
    expect_seq = 1
    for i, r in enumerate(rows):
        label = f"entry id {r.id} (seq {r.seq}, {r.action} {r.model_id or ''}"
        label += f"@{r.version})" if r.version is not None else ")"
        recomputed = entry_hash(
            r.chain,
            r.seq,
            r.model_id,
            r.version,
            r.action,
            r.ts,
            r.actor,
            r.payload,
            r.prev_hash,
        )
        if recomputed != r.hash:
            problems.append(
                AuditProblem(
                    chain=chain,
                    seq=r.seq,
                    entry_id=r.id,
                    kind="EDITED",
                    detail=f"{chain}: {label} does not match its hash: content was edited",
                )
            )
        elif r.seq != expect_seq or r.prev_hash != prev:
            if r.seq < expect_seq:
                kind, what = "REORDERED", f"appears after seq {expect_seq - 1}"
            elif r.seq > expect_seq and any(x.seq == expect_seq for x in rows[i + 1 :]):
                # The missing entry is still there, only stored later: moved, not removed.
                kind, what = "REORDERED", f"appears before seq {expect_seq}"
            elif r.seq > expect_seq:
                kind, what = "DELETED", f"follows a gap: seq {expect_seq}..{r.seq - 1} missing"
            else:
                kind, what = "REORDERED", "does not link to the entry before it"
            problems.append(
                AuditProblem(
                    chain=chain,
                    seq=r.seq,
                    entry_id=r.id,
                    kind=kind,
                    detail=f"{chain}: {label} {what}",
                )
            )
        if problems:
            break
        prev = r.hash
        expect_seq = r.seq + 1
    if not problems:
        head = conn.execute(
            select(audit_heads.c.seq, audit_heads.c.hash).where(audit_heads.c.chain == chain)
        ).first()
        if head is None and rows:
            problems.append(
                AuditProblem(
                    chain=chain,
                    seq=None,
                    entry_id=None,
                    kind="MISSING",
                    detail=f"{chain}: the head row is missing, though the chain has "
                    f"{len(rows)} entries: audit_heads was edited",
                )
            )
        elif head is not None and (head.seq != expect_seq - 1 or head.hash != prev):
            problems.append(
                AuditProblem(
                    chain=chain,
                    seq=head.seq,
                    entry_id=None,
                    kind="TRUNCATED",
                    detail=f"{chain}: the head records seq {head.seq} but the chain ends at "
                    f"seq {expect_seq - 1}: entries were removed from the end",
                )
            )
    return rows, problems


# ---------------------------------------------------------------------------- cross-checks
#
# Every table row a mutation writes is described by the one audit entry written with it, so
# replaying an intact chain gives what the tables must hold. A row that disagrees was written
# by something other than the registry, or its entry was removed.


@dataclass
class _ModelReplay:
    spec: dict[str, Any] | None = None
    spec_seq: int | None = None
    slices: list[str] = field(default_factory=list)
    versions: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    state: dict[tuple[int, str], tuple[str, int | None]] = field(default_factory=dict)
    generation: dict[str, int] = field(default_factory=dict)
    approvals: Counter[tuple[Any, ...]] = field(default_factory=Counter)
    overrides: Counter[tuple[Any, ...]] = field(default_factory=Counter)


def _replay_model(rows: list[Any]) -> _ModelReplay:
    r = _ModelReplay()
    for e in rows:
        a = e.action
        if a not in ("register_model", "register_version", "gate_result", "transition",
                     "rollback", "approval", "override", "amend_model",
                     "break_glass"):  # fmt: skip
            continue  # pins, dependents, alerts and history without table state
        p = json.loads(e.payload)
        v = e.version
        if a == "register_model":
            r.spec, r.spec_seq = p, e.seq
            r.slices = list(p.get("slices") or ["global"])
        elif a == "amend_model":  # a gated spec change: the new spec, and any added slice
            r.spec, r.spec_seq = p["spec"], e.seq
            r.slices = list(p["spec"].get("slices") or ["global"])
            for sl, states in (p.get("added_slices") or {}).items():
                for ver, st in states.items():
                    r.state[(int(ver), sl)] = (st, None)
        elif a == "register_version":
            r.versions[v] = (e.seq, p)
            for sl in r.slices:
                r.state[(v, sl)] = ("REGISTERED", None)
        elif a == "gate_result":
            for sl in r.slices:
                r.state[(v, sl)] = (p["to"], None)
        elif a in ("transition", "rollback", "break_glass"):
            sl = p["slice"]
            r.state[(v, sl)] = (p["to"], p.get("percent"))
            if p.get("deprecated") is not None:
                r.state[(int(p["deprecated"]), sl)] = ("DEPRECATED", None)
            if p.get("restored") is not None:
                r.state[(int(p["restored"]), sl)] = ("PROMOTED", None)
            if p.get("generation") is not None:
                r.generation[sl] = max(r.generation.get(sl, 0), int(p["generation"]))
        elif a == "approval":
            r.approvals[(v, p["slice"], p["to"], e.actor, p.get("team"))] += 1
        elif a == "override":
            r.overrides[(v, p["slice"], p.get("kind"), e.actor)] += 1
    return r


def _problem(chain: str, kind: str, detail: str, seq: int | None = None) -> AuditProblem:
    return AuditProblem(chain=chain, seq=seq, entry_id=None, kind=kind, detail=f"{chain}: {detail}")


def _fmt_state(st: tuple[str, int | None]) -> str:
    return st[0] + (f" ({st[1]}%)" if st[1] is not None else "")


def _counter_diff(
    chain: str, what: str, table: Counter[Any], replay: Counter[Any], label: Any
) -> list[AuditProblem]:
    out = []
    for key in sorted((table - replay).keys(), key=repr):
        out.append(_problem(chain, "MISMATCH", f"{what} {label(key)} has no audit entry"))
    for key in sorted((replay - table).keys(), key=repr):
        out.append(
            _problem(chain, "MISMATCH", f"{what} {label(key)} is in the audit chain but not in "
                     "the table")  # fmt: skip
        )
    return out


def missing_chain(model_id: str) -> AuditProblem:
    chain = chain_for(model_id)
    return _problem(
        chain,
        "MISSING",
        f"model {model_id!r} exists but has no audit chain (no entries and no head): its "
        "history was deleted",
    )


def cross_check_model(conn: Connection, model_id: str, rows: list[Any]) -> list[AuditProblem]:
    """Compare one model's tables with what its (intact) chain replays to; name every
    difference."""
    chain = chain_for(model_id)
    rp = _replay_model(rows)
    out: list[AuditProblem] = []
    spec_json = conn.execute(
        select(models.c.spec_json).where(models.c.model_id == model_id)
    ).scalar()
    if spec_json is None:
        return [_problem(chain, "MISMATCH", f"model {model_id!r} has a chain but no models row")]
    if rp.spec is None:
        out.append(
            _problem(chain, "MISSING", f"model {model_id!r} has no register_model entry")
        )
    elif json.loads(spec_json) != rp.spec:
        table = json.loads(spec_json)
        fields = sorted(k for k in set(table) | set(rp.spec) if table.get(k) != rp.spec.get(k))
        out.append(
            _problem(
                chain,
                "MISMATCH",
                f"model {model_id!r}: the stored spec differs from its register_model entry "
                f"(seq {rp.spec_seq}) in {', '.join(fields)}",
                rp.spec_seq,
            )
        )

    vrows = conn.execute(
        select(
            model_versions.c.version,
            model_versions.c.weights_hash,
            model_versions.c.weights_uri,
            model_versions.c.training_run_id,
            model_versions.c.feature_contract_ref,
            model_versions.c.parent_version,
        ).where(model_versions.c.model_id == model_id)
    ).all()
    for vr in vrows:
        entry = rp.versions.get(vr.version)
        if entry is None:
            out.append(
                _problem(
                    chain,
                    "MISSING",
                    f"{model_id}@{vr.version} exists but its chain has no register_version entry",
                )
            )
            continue
        seq, p = entry
        table = {
            "weights_hash": vr.weights_hash,
            "weights_uri": vr.weights_uri,
            "training_run_id": vr.training_run_id,
            "feature_contract_ref": vr.feature_contract_ref,
            "parent": vr.parent_version,
        }
        differ = sorted(k for k, val in table.items() if p.get(k) != val)
        if differ:
            out.append(
                _problem(
                    chain,
                    "MISMATCH",
                    f"{model_id}@{vr.version}: {', '.join(differ)} differ from its "
                    f"register_version entry (seq {seq})",
                    seq,
                )
            )
    for v in sorted(set(rp.versions) - {vr.version for vr in vrows}):
        out.append(
            _problem(
                chain,
                "MISMATCH",
                f"{model_id}@{v} was registered (seq {rp.versions[v][0]}) but has no "
                "model_versions row",
            )
        )

    srows = conn.execute(
        select(
            slice_states.c.version,
            slice_states.c.slice,
            slice_states.c.state,
            slice_states.c.percent,
            slice_states.c.params_json,
        ).where(slice_states.c.model_id == model_id)
    ).all()
    table_state = {(r.version, r.slice): (r.state, r.percent) for r in srows}
    for key in sorted(set(table_state) | set(rp.state)):
        v, sl = key
        have, want = table_state.get(key), rp.state.get(key)
        if have == want:
            continue
        where = f"{model_id}@{v} on slice {sl!r}"
        if want is None:
            detail = f"{where} is {_fmt_state(have)} in slice_states, but its chain never " \
                "registered it"  # fmt: skip
        elif have is None:
            detail = f"{where} has no slice_states row, but its chain replays to " \
                f"{_fmt_state(want)}"  # fmt: skip
        else:
            detail = f"{where} is {_fmt_state(have)} in slice_states, but its audit chain " \
                f"replays to {_fmt_state(want)}"  # fmt: skip
        out.append(_problem(chain, "MISMATCH", detail))

    for ms in conn.execute(
        select(model_slices.c.slice, model_slices.c.generation, model_slices.c.desired_json)
        .where(model_slices.c.model_id == model_id)
        .order_by(model_slices.c.slice)
    ).all():
        want_gen = rp.generation.get(ms.slice, 0)
        if ms.generation != want_gen:
            out.append(
                _problem(
                    chain,
                    "MISMATCH",
                    f"slice {ms.slice!r} is at desired generation {ms.generation}, but its "
                    f"chain last recorded generation {want_gen}",
                )
            )
        live = [
            SliceRow(r.version, State(r.state), r.percent, json.loads(r.params_json))
            for r in srows
            if r.slice == ms.slice
            and r.state in ("SHADOW", "CANARY", "AB_TEST", "PROMOTED", "DEPRECATED")
        ]
        stored = DesiredState.model_validate_json(ms.desired_json).content()
        derived = derive(model_id, ms.slice, ms.generation, live).content()
        if stored != derived:
            fields = sorted(k for k in stored if stored[k] != derived.get(k))
            shown = "; ".join(f"{k} {stored[k]!r}, not {derived.get(k)!r}" for k in fields)
            out.append(
                _problem(
                    chain,
                    "MISMATCH",
                    f"the desired state of slice {ms.slice!r} is not what its slice states "
                    f"derive: {shown}",
                )
            )

    table_approvals = Counter(
        (r.version, r.slice, r.target_state, r.approver, r.team)
        for r in conn.execute(
            select(
                approvals.c.version,
                approvals.c.slice,
                approvals.c.target_state,
                approvals.c.approver,
                approvals.c.team,
            ).where(approvals.c.model_id == model_id)
        )
    )
    out += _counter_diff(
        chain,
        "approval",
        table_approvals,
        rp.approvals,
        lambda k: f"of {model_id}@{k[0]} -> {k[2]} on slice {k[1]!r} by {k[3]} ({k[4]})",
    )
    table_overrides = Counter(
        (r.version, r.slice, r.kind, r.actor)
        for r in conn.execute(
            select(overrides.c.version, overrides.c.slice, overrides.c.kind, overrides.c.actor)
            .where(overrides.c.model_id == model_id)
        )
    )
    out += _counter_diff(
        chain,
        "override",
        table_overrides,
        rp.overrides,
        lambda k: f"{k[2]} of {model_id}@{k[0]} on slice {k[1]!r} by {k[3]}",
    )
    return out


def cross_check_registry(conn: Connection, rows: list[Any]) -> list[AuditProblem]:
    """Teams, actors, datasets and contracts against the registry-wide chain."""
    chain = REGISTRY_CHAIN
    want_teams: set[str] = set()
    want_actors: dict[str, str] = {}
    want_data: dict[tuple[str, int], tuple[str, str, str | None]] = {}
    want_contracts: dict[tuple[str, int], Any] = {}
    for e in rows:
        if e.action not in ("add_team", "add_actor", "register_dataset", "delete_dataset",
                            "register_contract"):  # fmt: skip
            continue
        p = json.loads(e.payload)
        if e.action == "add_team":
            want_teams.add(p["name"])
        elif e.action == "add_actor":
            want_actors.setdefault(p["name"], p["team"])
        elif e.action == "register_dataset":
            want_data[(p["name"], int(p["version"]))] = (p["kind"], p["uri"], p["content_hash"])
        elif e.action == "delete_dataset":
            want_data.pop((p["name"], int(p["version"])), None)
        else:
            name, _, ver = str(p["ref"]).rpartition("@")
            want_contracts[(name, int(ver))] = p["features"]
    out: list[AuditProblem] = []
    have_teams = set(conn.execute(select(teams.c.name)).scalars())
    for t in sorted(have_teams - want_teams):
        out.append(_problem(chain, "MISMATCH", f"team {t!r} has no add_team entry"))
    for t in sorted(want_teams - have_teams):
        out.append(_problem(chain, "MISMATCH", f"team {t!r} was added but has no teams row"))
    have_actors = {r.name: r.team for r in conn.execute(select(actors.c.name, actors.c.team))}
    for name in sorted(set(have_actors) | set(want_actors)):
        have, want = have_actors.get(name), want_actors.get(name)
        if have == want:
            continue
        if want is None:
            detail = f"actor {name!r} (team {have!r}) has no add_actor entry"
        elif have is None:
            detail = f"actor {name!r} was added (team {want!r}) but has no actors row"
        else:
            detail = f"actor {name!r} is in team {have!r}, but was added to team {want!r}"
        out.append(_problem(chain, "MISMATCH", detail))
    have_data = {
        (r.name, r.version): (r.kind, r.uri, r.content_hash)
        for r in conn.execute(
            select(datasets.c.name, datasets.c.version, datasets.c.kind, datasets.c.uri,
                   datasets.c.content_hash)
        )  # fmt: skip
    }
    for key in sorted(set(have_data) | set(want_data)):
        if have_data.get(key) != want_data.get(key):
            what = (
                "has no register_dataset entry"
                if key not in want_data
                else "was registered but has no row"
                if key not in have_data
                else "differs from its register_dataset entry"
            )
            out.append(_problem(chain, "MISMATCH", f"dataset {key[0]}@{key[1]} {what}"))
    have_contracts = {
        (r.name, r.version): json.loads(r.features_json)
        for r in conn.execute(
            select(feature_contracts.c.name, feature_contracts.c.version,
                   feature_contracts.c.features_json)
        )  # fmt: skip
    }
    for key in sorted(set(have_contracts) | set(want_contracts)):
        if have_contracts.get(key) != want_contracts.get(key):
            out.append(
                _problem(
                    chain,
                    "MISMATCH",
                    f"feature contract {key[0]}@{key[1]} differs from its register_contract "
                    "entry, or has none",
                )
            )
    return out

