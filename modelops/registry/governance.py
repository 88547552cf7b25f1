"""The evidence a transition is allowed on: gate results, approvals and overrides.

Each is recorded under the lock of what it speaks for, bound to the state epoch it was
given in, and audited like a transition, so `audit verify` can replay who allowed what.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, insert, select

from modelops.errors import ConflictError, IllegalTransition, SpecError
from modelops.identity import Expected, SignedKind, SignedStatement, SigningKey, WrongSubject
from modelops.lifecycle import approval_target
from modelops.spec import DEFAULT_SLICE, RollbackClass, State, Tier
from modelops.store import db
from modelops.store.tables import approvals, overrides, state_changes

from .amendments import AmendOps
from .anchoring import AnchorOps
from .breakglass import BreakGlassOps
from .checks import check_finite, gate_verdict, parse_state
from .records import (
    IRREVERSIBLE_OVERRIDE,
    OVERRIDE_KINDS,
    SLO_NOT_MEASURED_OVERRIDE,
    ApprovalRecord,
    TransitionResult,
    canonical,
)
from .signatures import StatementInput, statement_json, unsigned
from .statements import WriteOp
from .transitions import TransitionOps

__all__ = ["GovernanceOps"]


class GovernanceOps(AmendOps, AnchorOps, BreakGlassOps, TransitionOps):
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

    def approval_subject(
        self,
        model_id: str,
        version: int,
        *,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        target: State | str | None = None,
    ) -> tuple[State, int]:
        """What an approval given now would be for, and the epoch it must be signed at: the
        signer reads this, signs, and the registry re-checks both under its lock."""
        with db.read_tx(self.engine) as conn:
            spec = self._spec(conn, model_id)
            row = self._state_row(conn, model_id, version, slice)
            current = State(row.state)
            ctx = self._context(conn, spec, version, self._slice_rows(conn, model_id, slice))
            requested = parse_state(target) if target is not None else None
            tgt = approval_target(f"{model_id}@{version}", slice, current, requested, ctx)
            return tgt, int(row.epoch)

    def override_subject(
        self,
        model_id: str,
        version: int,
        *,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        kind: str = IRREVERSIBLE_OVERRIDE,
    ) -> tuple[State, int]:
        """The target state an override of this kind speaks for, and the epoch to sign at."""
        with db.read_tx(self.engine) as conn:
            row = self._state_row(conn, model_id, version, slice)
        target = State.OFFLINE_PASSED if kind == SLO_NOT_MEASURED_OVERRIDE else State.PROMOTED
        return target, int(row.epoch)

    def approve(
        self,
        model_id: str,
        version: int,
        *,
        actor: str | None = None,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        target: State | str | None = None,
        statement: StatementInput | None = None,
        key: SigningKey | None = None,
    ) -> ApprovalRecord:
        """Approve the next gated move of this version on this slice, at its current state.

        The approval is a signed statement (`statement`, or signed here with `key` held by
        `actor`) over model, version, slice, target state and epoch; it is verified under the
        slice lock and refused, with one line naming why, when forged, replayed, expired, of
        another epoch or subject, signed by an unknown or revoked key, or by the actor who
        registered the version. An approval binds to the state it was given in (its epoch):
        once the version moves, old approvals no longer count.
        """
        if statement is None and key is not None:
            if actor is None:
                raise SpecError("signing an approval needs the signer's name (--actor)")
            tgt0, epoch = self.approval_subject(model_id, version, slice=slice, target=target)
            statement = self.sign_as(
                key,
                kind=SignedKind.approval,
                signer=actor,
                epoch=epoch,
                model=model_id,
                version=version,
                slice=slice,
                target_state=tgt0.value,
            )
        what = f"approval of {model_id}@{version} on slice {slice!r}"
        if statement is None:
            raise unsigned(what)
        stmt = SignedStatement.from_obj(statement)
        signer = self._require_actor(stmt.payload.signer)
        if target is None and stmt.payload.target_state is not None:
            target = stmt.payload.target_state
        with self._write(signer, model_id=model_id, lock="slice", slice_=slice) as op:
            row = op.row(version, slice)
            current = State(row.state)
            rows = self._slice_rows(op.conn, model_id, slice)
            ctx = self._context(op.conn, op.model, version, rows)
            requested = parse_state(target) if target is not None else None
            tgt = approval_target(f"{model_id}@{version}", slice, current, requested, ctx)
            team = op.team()
            self._verify_signed(
                op,
                stmt,
                what=what,
                expect=Expected(
                    kind=SignedKind.approval,
                    model=model_id,
                    version=version,
                    slice=slice,
                    target_state=tgt.value,
                ),
                epoch=int(row.epoch),
                acting_actor=self._registrant(op, version),
                claimed=actor,
            )
            dup = op.conn.execute(
                select(func.count())
                .select_from(approvals)
                .where(
                    approvals.c.model_id == model_id,
                    approvals.c.version == version,
                    approvals.c.slice == slice,
                    approvals.c.target_state == tgt.value,
                    approvals.c.epoch == row.epoch,
                    approvals.c.approver == signer,
                )
            ).scalar()
            if dup:
                raise ConflictError(
                    f"{signer} already approved {model_id}@{version} -> {tgt.value} on slice "
                    f"{slice!r}; a second approval must come from another actor"
                )
            rec = ApprovalRecord(
                model_id=model_id,
                version=version,
                slice=slice,
                target=tgt,
                approver=signer,
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
                    approver=signer,
                    team=team,
                    ts=op.ts.isoformat(),
                    statement=statement_json(stmt),
                    key_id=stmt.key_id,
                )
            )
            op.audit(
                "approval",
                {
                    "slice": slice,
                    "from": current.value,
                    "to": tgt.value,
                    "team": team,
                    "statement": stmt.to_dict(),
                },
                version=version,
            )
            return rec

    def _registrant(self, op: WriteOp, version: int) -> str | None:
        """Who registered the version: the one actor who may not approve its moves."""
        return op.conn.execute(
            select(state_changes.c.actor)
            .where(
                state_changes.c.model_id == op.model.model_id,
                state_changes.c.version == version,
                state_changes.c.from_state.is_(None),
            )
            .limit(1)
        ).scalar()

    def override(
        self,
        model_id: str,
        version: int,
        *,
        actor: str | None = None,
        reason: str | None = None,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        kind: str = IRREVERSIBLE_OVERRIDE,
        statement: StatementInput | None = None,
        key: SigningKey | None = None,
    ) -> None:
        """Record who takes responsibility, and why: for promoting an IRREVERSIBLE model (the
        default kind), or (`slo_not_measured`) for passing an L2/L3 version whose latency and
        memory SLO could not be measured, given while it awaits its offline gates.

        Signed like an approval; the signature covers the reason, and the kind through the
        target state it speaks for (PROMOTED or OFFLINE_PASSED)."""
        if kind not in OVERRIDE_KINDS:
            raise SpecError(
                f"override kind {kind!r} is not allowed; allowed: {', '.join(OVERRIDE_KINDS)}"
            )
        if statement is not None and reason is None:
            reason = SignedStatement.from_obj(statement).payload.reason
        if not reason or not reason.strip():
            raise SpecError("an override needs a reason (--reason WHY)")
        if statement is None and key is not None:
            if actor is None:
                raise SpecError("signing an override needs the signer's name (--actor)")
            actor = self._require_actor(actor)
            tgt0, epoch = self.override_subject(model_id, version, slice=slice, kind=kind)
            statement = self.sign_as(
                key,
                kind=SignedKind.override,
                signer=actor,
                epoch=epoch,
                model=model_id,
                version=version,
                slice=slice,
                target_state=tgt0.value,
                reason=reason,
            )
        what = f"override ({kind}) of {model_id}@{version} on slice {slice!r}"
        if statement is None:
            raise unsigned(what)
        stmt = SignedStatement.from_obj(statement)
        signer = self._require_actor(stmt.payload.signer)
        with self._write(signer, model_id=model_id, lock="slice", slice_=slice) as op:
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
            self._verify_signed(
                op,
                stmt,
                what=what,
                expect=Expected(
                    kind=SignedKind.override,
                    model=model_id,
                    version=version,
                    slice=slice,
                    target_state=target.value,
                ),
                epoch=int(row.epoch),
                claimed=actor,
            )
            if stmt.payload.reason != reason:
                raise WrongSubject(
                    f"the override by {signer!r} was signed with reason "
                    f"{stmt.payload.reason!r}, not {reason!r}; sign the reason you give"
                )
            op.conn.execute(
                insert(overrides).values(
                    model_id=model_id,
                    version=version,
                    slice=slice,
                    target_state=target.value,
                    epoch=row.epoch,
                    kind=kind,
                    actor=signer,
                    reason=reason,
                    ts=op.ts.isoformat(),
                    statement=statement_json(stmt),
                    key_id=stmt.key_id,
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
                    "statement": stmt.to_dict(),
                },
                version=version,
            )
