"""The evidence a transition is allowed on: gate results, approvals and overrides.

Each is recorded under the lock of what it speaks for, bound to the state epoch it was
given in, and audited like a transition, so `audit verify` can replay who allowed what.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, insert, select

from modelops.errors import ConflictError, IllegalTransition, SpecError
from modelops.lifecycle import approval_target
from modelops.spec import DEFAULT_SLICE, RollbackClass, State, Tier
from modelops.store.tables import approvals, overrides, state_changes

from .checks import check_finite, gate_verdict, parse_state
from .records import (
    IRREVERSIBLE_OVERRIDE,
    OVERRIDE_KINDS,
    SLO_NOT_MEASURED_OVERRIDE,
    ApprovalRecord,
    TransitionResult,
    canonical,
)
from .transitions import TransitionOps

__all__ = ["GovernanceOps"]


class GovernanceOps(TransitionOps):
    def record_gate_result(
        self,
        model_id: str,
        version: int,
        *,
        passed: bool,
        results: dict[str, Any],
        actor: str = "system:gates",
    ) -> list[TransitionResult]:
        """Offline gates move REGISTERED to OFFLINE_PASSED or FAILED on every slice at once.

        A version is gated once. A redelivered identical result is a no-op, because
        orchestrator events repeat; a different one is a conflict naming both, never a
        silent drop, since the first verdict is what the version was promoted on.
        """
        actor = self._require_actor(actor)
        check_finite(results)
        target = State.OFFLINE_PASSED if passed else State.FAILED
        with self._write(actor, model_id=model_id, lock="slices") as op:
            spec = op.model
            srows = {s: op.row(version, s) for s in spec.slices}
            first = op.conn.execute(
                select(state_changes.c.state, state_changes.c.gate_results_json)
                .where(
                    state_changes.c.model_id == model_id,
                    state_changes.c.version == version,
                    state_changes.c.from_state == State.REGISTERED.value,
                    state_changes.c.state.in_([State.OFFLINE_PASSED.value, State.FAILED.value]),
                )
                .order_by(state_changes.c.id)
                .limit(1)
            ).first()
            if first is not None:
                was_passed = first.state == State.OFFLINE_PASSED.value
                old = (was_passed, json.loads(first.gate_results_json))
                new = (passed, json.loads(canonical(results)))
                if old == new:
                    return op.unchanged([])
                raise ConflictError(
                    f"conflict: {model_id}@{version} already has a gate result, "
                    f"{gate_verdict(*old)}; this one is {gate_verdict(*new)}; a version is "
                    "gated once: register a new version to gate again"
                )
            states = {s: State(r.state) for s, r in srows.items()}
            bad = {s: st for s, st in states.items() if st is not State.REGISTERED}
            if bad:
                where = ", ".join(f"{s}={st.value}" for s, st in sorted(bad.items()))
                raise IllegalTransition(
                    f"{model_id}@{version}: gate results apply only to REGISTERED versions; "
                    f"it is {where}"
                )
            for s, r in srows.items():
                self._set_state(
                    op.conn,
                    model_id,
                    version,
                    s,
                    r,
                    target,
                    percent=None,
                    params={},
                    ts=op.ts,
                    actor=actor,
                    reason="offline gates",
                    gate_results=results,
                )
            audit_id = op.audit(
                "gate_result",
                {"passed": passed, "to": target.value, "results": results},
                version=version,
            )
            return [
                TransitionResult(
                    model_id=model_id,
                    version=version,
                    slice=s,
                    from_state=State.REGISTERED,
                    to_state=target,
                    generation=0,
                    audit_id=audit_id,
                )
                for s in sorted(spec.slices)
            ]

    def approve(
        self,
        model_id: str,
        version: int,
        *,
        actor: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        target: State | str | None = None,
    ) -> ApprovalRecord:
        """Approve the next gated move of this version on this slice, at its current state.

        An approval binds to the state it was given in (its epoch): once the version moves,
        old approvals no longer count.
        """
        actor = self._require_actor(actor)
        with self._write(actor, model_id=model_id, lock="slice", slice_=slice) as op:
            team = op.team()
            row = op.row(version, slice)
            current = State(row.state)
            rows = self._slice_rows(op.conn, model_id, slice)
            ctx = self._context(op.conn, op.model, version, rows)
            requested = parse_state(target) if target is not None else None
            tgt = approval_target(f"{model_id}@{version}", slice, current, requested, ctx)
            dup = op.conn.execute(
                select(func.count())
                .select_from(approvals)
                .where(
                    approvals.c.model_id == model_id,
                    approvals.c.version == version,
                    approvals.c.slice == slice,
                    approvals.c.target_state == tgt.value,
                    approvals.c.epoch == row.epoch,
                    approvals.c.approver == actor,
                )
            ).scalar()
            if dup:
                raise ConflictError(
                    f"{actor} already approved {model_id}@{version} -> {tgt.value} on slice "
                    f"{slice!r}; a second approval must come from another actor"
                )
            rec = ApprovalRecord(
                model_id=model_id,
                version=version,
                slice=slice,
                target=tgt,
                approver=actor,
                team=team,
                epoch=row.epoch,
            )
            op.conn.execute(
                insert(approvals).values(
                    model_id=model_id,
                    version=version,
                    slice=slice,
                    target_state=tgt.value,
                    epoch=row.epoch,
                    approver=actor,
                    team=team,
                    ts=op.ts.isoformat(),
                )
            )
            op.audit(
                "approval",
                {"slice": slice, "from": current.value, "to": tgt.value, "team": team},
                version=version,
            )
            return rec

    def override(
        self,
        model_id: str,
        version: int,
        *,
        actor: str,
        reason: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        kind: str = IRREVERSIBLE_OVERRIDE,
    ) -> None:
        """Record who takes responsibility, and why: for promoting an IRREVERSIBLE model (the
        default kind), or (`slo_not_measured`) for passing an L2/L3 version whose latency and
        memory SLO could not be measured, given while it awaits its offline gates."""
        actor = self._require_actor(actor)
        if kind not in OVERRIDE_KINDS:
            raise SpecError(
                f"override kind {kind!r} is not allowed; allowed: {', '.join(OVERRIDE_KINDS)}"
            )
        if not reason or not reason.strip():
            raise SpecError("an override needs a reason (--reason WHY)")
        with self._write(actor, model_id=model_id, lock="slice", slice_=slice) as op:
            spec = op.model
            team = op.team()
            if (
                kind == IRREVERSIBLE_OVERRIDE
                and spec.rollback_class is not RollbackClass.IRREVERSIBLE
            ):
                raise IllegalTransition(
                    f"model {model_id!r} is {spec.rollback_class.value}; overrides are only for "
                    "IRREVERSIBLE models"
                )
            if kind == SLO_NOT_MEASURED_OVERRIDE and spec.tier not in (Tier.L2, Tier.L3):
                raise IllegalTransition(
                    f"model {model_id!r} is {spec.tier.value}; an unmeasured SLO blocks only at "
                    "L2 and L3, so there is nothing to override"
                )
            row = op.row(version, slice)
            target = State.PROMOTED
            if kind == SLO_NOT_MEASURED_OVERRIDE:
                target = State.OFFLINE_PASSED
                if row.state != State.REGISTERED.value:
                    raise IllegalTransition(
                        f"{model_id}@{version} is {row.state} on slice {slice!r}; an SLO override "
                        "is given while the version awaits its offline gates (REGISTERED)"
                    )
            op.conn.execute(
                insert(overrides).values(
                    model_id=model_id,
                    version=version,
                    slice=slice,
                    target_state=target.value,
                    epoch=row.epoch,
                    kind=kind,
                    actor=actor,
                    reason=reason,
                    ts=op.ts.isoformat(),
                )
            )
            op.audit(
                "override",
                {
                    "slice": slice,
                    "kind": kind,
                    "reason": reason,
                    "team": team,
                    "at_state": row.state,
                },
                version=version,
            )
