"""Rollback: choose what to roll back and move it under one lock, idempotently.

Two responders to one incident (a sensor and a human, or a retried run) must not roll a
slice back twice, so a rollback that already happened is answered, not repeated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, select

from modelops import audit as audit_mod
from modelops.desired import SliceRow
from modelops.errors import ConflictError, IllegalTransition
from modelops.lifecycle import ROLLBACK_SOURCES, SINGLETON_STATES, TRAFFIC_STATES
from modelops.spec import DEFAULT_SLICE, State
from modelops.store.tables import audit_log

from .checks import parse_state
from .records import AuditRef, TransitionResult
from .rollback_state import RollbackStateOps
from .statements import WriteOp

__all__ = ["RollbackOps"]

# What a bare rollback picks, newest kind of change first.
_BARE_ROLLBACK_ORDER = (State.CANARY, State.AB_TEST, State.SHADOW, State.PROMOTED)


class RollbackOps(RollbackStateOps):
    def rollback(
        self,
        model_id: str,
        *,
        actor: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        reason: str = "",
        automated: bool = False,
        expected_version: int | None = None,
        expected: State | str | None = None,
        cascade_approvals: Sequence[Any] = (),
    ) -> TransitionResult:
        """Roll back one version on the slice, chosen and moved under one lock.

        Named (`expected_version`): that version. If it is already ROLLED_BACK the answer is
        that rollback (`changed=False`, nothing written), so a retry or a duplicate is
        harmless; `expected` makes it a strict compare-and-set on the state instead.
        Bare: the live candidate (CANARY, AB_TEST, SHADOW), else prod; or, with `expected`,
        the version holding that state. A bare rollback undoes the slice's latest serving
        change once: if that change already was a rollback, the answer is that rollback.
        A second responder (or a retry) cannot be told from a deliberate second rollback,
        so going further back names its version.
        `cascade_approvals`: signed approvals to cascade into dependents, verified and their
        nonces consumed in this transaction and recorded in its entry (an answered rollback
        consumes none).
        """
        actor = self._require_actor(actor)
        expected_s = parse_state(expected) if expected is not None else None
        with self._write(actor, model_id=model_id, lock="slice", slice_=slice) as op:
            rows = sorted(self._slice_rows(op.conn, model_id, slice), key=lambda r: r.version)
            if expected_version is not None:
                picked = self._named_rollback(op, slice, expected_version, expected_s, rows)
            elif expected_s is not None:
                picked = _holder_of(model_id, slice, expected_s, rows)
            else:
                picked = self._bare_rollback(op, slice, rows)
            if isinstance(picked, TransitionResult):
                return op.unchanged(picked)
            version, current = picked
            signed = self._consume_cascade_approvals(op, model_id, slice, cascade_approvals)
            return self._transition(
                op,
                version,
                slice,
                State.ROLLED_BACK,
                expected=current,
                reason=reason,
                automated=automated,
                audit_extra={"cascade_approvals": signed} if signed else None,
            )

    def _named_rollback(
        self,
        op: WriteOp,
        slice_: str,
        version: int,
        expected: State | None,
        rows: list[SliceRow],
    ) -> tuple[int, State] | TransitionResult:
        model_id = op.model.model_id
        row = op.row(version, slice_)
        current = State(row.state)
        if expected is not None:
            return version, expected  # the transition compares it under this lock
        if current is State.ROLLED_BACK and (
            done := self._last_rollback(op.conn, model_id, slice_, version)
        ):
            return _already(op.lock_row, done, rows)
        if current not in ROLLBACK_SOURCES:
            pct = f" ({row.percent}%)" if row.percent is not None else ""
            sources = ", ".join(s.value for s in State if s in ROLLBACK_SOURCES)
            raise ConflictError(
                f"conflict: {model_id}@{version} on slice {slice_!r} is "
                f"{current.value}{pct}, not in a state a rollback applies to "
                f"({sources}); re-read and retry"
            )
        return version, current

    def _bare_rollback(
        self, op: WriteOp, slice_: str, rows: list[SliceRow]
    ) -> tuple[int, State] | TransitionResult:
        model_id = op.model.model_id
        last = self._last_serving_change(op.conn, model_id, slice_)
        if last is not None and last.action == "rollback":
            return _already(op.lock_row, last, rows)
        by_state = {r.state: r for r in rows}
        pick = next((by_state[s] for s in _BARE_ROLLBACK_ORDER if s in by_state), None)
        if pick is None:
            raise IllegalTransition(
                f"nothing to roll back for {model_id!r} on slice {slice_!r}: no version "
                "is in SHADOW, CANARY, AB_TEST or PROMOTED"
            )
        return pick.version, pick.state

    def _serving_changes(self, conn: Connection, model_id: str, slice_: str) -> Iterator[AuditRef]:
        """The slice's transitions and rollbacks, newest first, read a page at a time."""
        q = (
            select(
                audit_log.c.id,
                audit_log.c.seq,
                audit_log.c.version,
                audit_log.c.action,
                audit_log.c.actor,
                audit_log.c.ts,
                audit_log.c.payload,
            )
            .where(
                audit_log.c.chain == audit_mod.chain_for(model_id),
                audit_log.c.action.in_(("transition", "rollback")),
                audit_log.c.seq < bindparam("below"),
            )
            .order_by(audit_log.c.seq.desc())
            .limit(64)
        )
        below = 2**31 - 1
        while True:
            page = conn.execute(q, {"below": below}).all()
            for r in page:
                payload = json.loads(r.payload)
                if payload.get("slice") == slice_:
                    yield AuditRef(r.id, r.version, r.action, r.actor, r.ts, payload)
            if len(page) < 64:
                return
            below = page[-1].seq

    def _last_serving_change(self, conn: Connection, model_id: str, slice_: str) -> AuditRef | None:
        """The newest entry that changed what the slice serves (a traffic state on either
        side), which is what a bare rollback would undo."""
        traffic = {s.value for s in TRAFFIC_STATES}
        for e in self._serving_changes(conn, model_id, slice_):
            if e.payload.get("from") in traffic or e.payload.get("to") in traffic:
                return e
        return None

    def _last_rollback(
        self, conn: Connection, model_id: str, slice_: str, version: int
    ) -> AuditRef | None:
        for e in self._serving_changes(conn, model_id, slice_):
            if e.action == "rollback" and e.version == version:
                return e
        return None


def _holder_of(
    model_id: str, slice_: str, expected: State, rows: list[SliceRow]
) -> tuple[int, State]:
    """The version holding a singleton state, which a rollback by state names."""
    if expected not in SINGLETON_STATES:
        raise IllegalTransition(
            f"several versions of {model_id} may be in {expected.value} on slice "
            f"{slice_!r}; name the version to roll back (--version N)"
        )
    holder = next((r for r in rows if r.state is expected), None)
    if holder is None:
        live = ", ".join(f"{r.version} {r.state.value}" for r in rows) or "none"
        raise ConflictError(
            f"conflict: no version of {model_id} is in {expected.value} on slice "
            f"{slice_!r} (live: {live}); re-read and retry"
        )
    return holder.version, expected


def _already(lock_row: Any, done: AuditRef, rows: list[SliceRow]) -> TransitionResult:
    """The idempotent answer to a rollback that an earlier one already made."""
    prod = next((r.version for r in rows if r.state is State.PROMOTED), None)
    note = f"already rolled back by {done.actor} at {done.ts} (audit entry {done.id})"
    if prod is not None:
        note += f"; to roll back prod version {prod} as well, name it: --version {prod}"
    return TransitionResult(
        model_id=lock_row.model_id,
        version=int(done.version or 0),
        slice=lock_row.slice,
        from_state=State(done.payload.get("from", State.ROLLED_BACK.value)),
        to_state=State.ROLLED_BACK,
        generation=int(lock_row.generation),
        restored_version=done.payload.get("restored"),
        audit_id=done.id,
        changed=False,
        note=note,
    )
