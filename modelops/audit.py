"""The tamper-evident audit log: one hash chain per model (and one for registry-wide events).

Per-model chains let `audit verify` check one model without reading the whole log, and
let transitions on different models append without contending for one chain head.
The database rejects UPDATE and DELETE on audit_log (migration triggers); the chain makes
an edit, a deletion or a reordering by someone who bypasses the triggers visible.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, bindparam, insert, select, update

from modelops.store.tables import audit_heads, audit_log

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
    "chain_for",
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
    kind: str  # EDITED, DELETED, REORDERED, TRUNCATED
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
        if head is not None and (head.seq != expect_seq - 1 or head.hash != prev):
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
    return len(rows), problems
