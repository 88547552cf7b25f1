"""Per-slice transitions: the compare-and-set move, rollback, and the desired state.

A transition holds the (model, slice) lock, decides with the pure rules in `lifecycle`,
writes the state change, recomputes the desired state when traffic changes, and appends
one audit entry, all in one transaction (invariant 4).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from modelops.compliance import require_documentation
from modelops.desired import DesiredState, SliceRow, derive, last_good
from modelops.errors import ConflictError, IllegalTransition, SpecError
from modelops.lifecycle import (
    SINGLETON_STATES,
    TRAFFIC_STATES,
    RecordedApproval,
    SliceContext,
    check_transition,
    counted_approvals,
)
from modelops.spec import DEFAULT_SLICE, ModelSpec, RollbackClass, ShadowMode, State, Tier
from modelops.store import db
from modelops.store.tables import (
    approvals,
    dataset_pins,
    model_slices,
    model_versions,
    overrides,
    slice_states,
)

from .checks import parse_state, unknown_slice
from .experiments import check_ab_promotion, enter_ab
from .records import IRREVERSIBLE_OVERRIDE, LiveState, TransitionResult, canonical
from .records import parse_ts as _parse_ts
from .statements import (
    I_STATE_CHANGE,
    Q_CONTRACT_REFS,
    Q_DESIRED,
    U_DESIRED,
    U_STATE,
    RegistryBase,
    WriteOp,
)

__all__ = ["TransitionOps"]


class TransitionOps(RegistryBase):
    # ------------------------------------------------------------------ transition

    def transition(
        self,
        model_id: str,
        version: int,
        target: State | str,
        *,
        actor: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002 - the domain's word
        expected: State | str | None = None,
        percent: int | None = None,
        reason: str = "",
        automated: bool = False,
        mode: ShadowMode | str | None = None,
        layer: str | None = None,
        gate_results: dict[str, Any] | None = None,
        expected_percent: int | None = None,
    ) -> TransitionResult:
        """Move one version on one slice, as a compare-and-set against `expected`.

        `expected_percent` extends the compare to the canary percent, so a step decided on
        a stale read of CANARY at one percent cannot move the canary backwards.
        """
        actor = self._require_actor(actor)
        target = parse_state(target)
        expected_s = parse_state(expected) if expected is not None else None
        with self._write(actor, model_id=model_id, lock="slice", slice_=slice) as op:
            return self._transition(
                op,
                version,
                slice,
                target,
                expected=expected_s,
                percent=percent,
                reason=reason,
                automated=automated,
                mode=mode,
                layer=layer,
                gate_results=gate_results,
                expected_percent=expected_percent,
            )

    def _transition(
        self,
        op: WriteOp,
        version: int,
        slice_: str,
        target: State,
        *,
        expected: State | None = None,
        percent: int | None = None,
        reason: str = "",
        automated: bool = False,
        mode: ShadowMode | str | None = None,
        layer: str | None = None,
        gate_results: dict[str, Any] | None = None,
        expected_percent: int | None = None,
        audit_extra: dict[str, Any] | None = None,
    ) -> TransitionResult:
        """The move itself, under the slice lock `op` holds. `audit_extra` joins the entry's
        payload (the rollback snapshot taken for this move is recorded there)."""
        spec, conn = op.model, op.conn
        model_id = spec.model_id
        row = op.row(version, slice_)
        current = State(row.state)
        _compare(model_id, version, slice_, row, current, expected, expected_percent)
        rows = self._slice_rows(conn, model_id, slice_)
        ctx = self._context(conn, spec, version, rows)
        if target is State.CANARY and percent is None and current is not State.CANARY:
            percent = 1
        decision = check_transition(
            f"{model_id}@{version}",
            slice_,
            current,
            target,
            ctx,
            percent=percent,
            current_percent=row.percent,
            automated=automated,
        )
        ts = op.ts
        approved = self._approvals_for(
            op, version, slice_, target, row.epoch, decision.approvals, decision.cross_team
        )
        override = self._irreversible_override(op, version, slice_, target, row.epoch)
        if spec.tier is Tier.L3 and target is not State.ROLLED_BACK and not reason.strip():
            raise SpecError(
                f"{model_id}@{version} is L3: every transition needs a reason (--reason WHY), "
                "kept in its audit entry; only a rollback may go without one"
            )
        if spec.tier is Tier.L3 and target is State.PROMOTED:
            # Read through separate connections: they see what is committed, and everything
            # the document reads is append-only or changes only under this slice's lock.
            require_documentation(self, model_id, version)  # type: ignore[arg-type]
        ab: dict[str, Any] | None = None
        if target is State.PROMOTED and current is State.AB_TEST:
            ab = check_ab_promotion(op, version, slice_, row)
        if target is State.ROLLED_BACK and current is State.PROMOTED:
            return self._rollback_prod(
                op, row, version, slice_, rows, reason, automated, audit_extra
            )
        params, percent = _target_params(model_id, slice_, target, percent, mode, layer)
        deprecated = self._deprecate_prod(op, version, slice_, target, ctx)
        self._set_state(
            conn,
            model_id,
            version,
            slice_,
            row,
            target,
            percent=percent,
            params=params,
            ts=ts,
            actor=op.actor,
            reason=reason,
            gate_results=gate_results,
        )
        if target is State.AB_TEST and current is not State.AB_TEST:
            ab = enter_ab(op, version, slice_, percent or 0, params["layer"])
        unpinned = self._maybe_archive(conn, model_id, version) if target is State.ARCHIVED else []
        generation = int(op.lock_row.generation)
        # A DEPRECATED version is the rollback target and kept warm, so archiving it
        # changes the desired state too.
        if (
            target in TRAFFIC_STATES
            or current in TRAFFIC_STATES
            or current is State.DEPRECATED
            or deprecated
        ):
            generation = self._write_desired(conn, model_id, slice_, op.lock_row, ts)
        payload: dict[str, Any] = {
            "slice": slice_,
            "from": current.value,
            "to": target.value,
            "percent": percent,
            "reason": reason,
            "automated": automated,
            "generation": generation,
        }
        # Only what the move involved: an empty part is left out of the entry.
        extra = {
            "params": params,
            "approvals": approved,
            "skip": decision.skip,
            "unpinned": unpinned,
            "gate_results": gate_results,
            "ab": ab,
        }
        payload.update({k: v for k, v in extra.items() if v})
        payload.update(audit_extra or {})
        if override is not None:
            payload["override"] = {"actor": override.actor, "reason": override.reason}
        if deprecated is not None:
            payload["deprecated"] = deprecated
        action = "rollback" if target is State.ROLLED_BACK else "transition"
        audit_id = op.audit(action, payload, version=version)
        return TransitionResult(
            model_id=model_id,
            version=version,
            slice=slice_,
            from_state=current,
            to_state=target,
            percent=percent,
            generation=generation,
            deprecated_version=deprecated,
            audit_id=audit_id,
        )

    def _context(
        self, conn: Connection, spec: ModelSpec, version: int, rows: list[SliceRow]
    ) -> SliceContext:
        """What the pure rules need beyond the version's own state, gathered from rows."""
        model_id = spec.model_id
        occupied = {r.state: r.version for r in rows if r.state in SINGLETON_STATES}
        prod = occupied.get(State.PROMOTED)
        refresh = False
        if prod is not None and prod != version:
            refs = dict(conn.execute(Q_CONTRACT_REFS, {"m": model_id, "vs": [prod, version]}).all())
            refresh = refs.get(prod) == refs.get(version)
        return SliceContext(
            tier=spec.tier,
            has_prod=prod is not None,
            ever_had_prod=prod is not None,
            is_weight_refresh=refresh,
            irreversible=spec.rollback_class is RollbackClass.IRREVERSIBLE,
            occupied=occupied,
        )

    def _approvals_for(
        self,
        op: WriteOp,
        version: int,
        slice_: str,
        target: State,
        epoch: int,
        needed: int,
        cross_team: bool,
    ) -> list[dict[str, str]]:
        """Gather the approvals recorded at this epoch; `lifecycle` decides if they count."""
        if not needed:
            return []
        spec, conn = op.model, op.conn
        rows = conn.execute(
            select(approvals.c.approver, approvals.c.team).where(
                approvals.c.model_id == spec.model_id,
                approvals.c.version == version,
                approvals.c.slice == slice_,
                approvals.c.target_state == target.value,
                approvals.c.epoch == epoch,
            )
        ).all()
        valid = counted_approvals(
            spec.model_id,
            version,
            slice_,
            target,
            tier=spec.tier,
            owner_team=spec.owner_team,
            actor=op.actor,
            recorded=[RecordedApproval(r.approver, r.team) for r in rows],
            known_teams=self._known_teams(conn) if cross_team else set(),
            needed=needed,
            cross_team=cross_team,
        )
        return [{"approver": r.approver, "team": r.team} for r in valid]

    def _irreversible_override(
        self, op: WriteOp, version: int, slice_: str, target: State, epoch: int
    ) -> Any:
        """Promoting an IRREVERSIBLE model at L2/L3 needs someone's recorded override."""
        spec = op.model
        if not (
            target is State.PROMOTED
            and spec.rollback_class is RollbackClass.IRREVERSIBLE
            and spec.tier in (Tier.L2, Tier.L3)
        ):
            return None
        found = op.conn.execute(
            select(overrides.c.actor, overrides.c.reason).where(
                overrides.c.model_id == spec.model_id,
                overrides.c.version == version,
                overrides.c.slice == slice_,
                overrides.c.target_state == target.value,
                overrides.c.epoch == epoch,
                overrides.c.kind == IRREVERSIBLE_OVERRIDE,
            )
        ).first()
        if found is None:
            model_id = spec.model_id
            raise IllegalTransition(
                f"{model_id}@{version} is IRREVERSIBLE at tier {spec.tier.value}: "
                "promotion needs an explicit override record (who and why); "
                "run `modelops override "
                f"{model_id} {version} --slice {slice_} --actor NAME --reason WHY`"
            )
        return found

    def _deprecate_prod(
        self, op: WriteOp, version: int, slice_: str, target: State, ctx: SliceContext
    ) -> int | None:
        """A new prod retires the old one to DEPRECATED, the rollback target kept warm."""
        if target is not State.PROMOTED:
            return None
        prod = ctx.occupied.get(State.PROMOTED)
        if prod is None or prod == version:
            return None
        model_id = op.model.model_id
        prow = op.row(prod, slice_)
        self._set_state(
            op.conn,
            model_id,
            prod,
            slice_,
            prow,
            State.DEPRECATED,
            percent=None,
            params={"deprecated_at_gen": op.lock_row.generation + 1},
            ts=op.ts,
            actor=op.actor,
            reason=f"replaced by version {version}",
        )
        return prod

    def _set_state(
        self,
        conn: Connection,
        model_id: str,
        version: int,
        slice_: str,
        row: Any,
        target: State,
        *,
        percent: int | None,
        params: dict[str, Any],
        ts: datetime,
        actor: str,
        reason: str,
        gate_results: dict[str, Any] | None = None,
    ) -> None:
        res = conn.execute(
            U_STATE,
            {
                "m": model_id,
                "v": version,
                "s": slice_,
                "old_epoch": row.epoch,
                "state": target.value,
                "percent": percent,
                "params_json": canonical(params),
                "epoch": row.epoch + 1,
                "updated_at": ts.isoformat(),
            },
        )
        if res.rowcount != 1:  # a lost compare-and-set: the lock makes this unreachable
            raise ConflictError(f"{model_id}@{version} on slice {slice_!r} changed underneath us")
        conn.execute(
            I_STATE_CHANGE,
            {
                "model_id": model_id,
                "version": version,
                "slice": slice_,
                "from_state": row.state,
                "state": target.value,
                "percent": percent,
                "ts": ts.isoformat(),
                "actor": actor,
                "reason": reason,
                "gate_results_json": canonical(gate_results or {}),
            },
        )

    def _write_desired(
        self, conn: Connection, model_id: str, slice_: str, lock_row: Any, ts: datetime
    ) -> int:
        rows = self._slice_rows(conn, model_id, slice_)
        new = derive(model_id, slice_, lock_row.generation + 1, rows)
        old = DesiredState.model_validate_json(lock_row.desired_json)
        if new.content() == old.content():
            return int(lock_row.generation)
        conn.execute(
            U_DESIRED,
            {
                "m": model_id,
                "s": slice_,
                "generation": new.generation,
                "desired_json": new.model_dump_json(),
                "ts": ts.isoformat(),
            },
        )
        return new.generation

    def _maybe_archive(self, conn: Connection, model_id: str, version: int) -> list[str]:
        """Archiving the last slice of a version releases its dataset pins (invariant 2)."""
        left = conn.execute(
            select(func.count())
            .select_from(slice_states)
            .where(
                slice_states.c.model_id == model_id,
                slice_states.c.version == version,
                slice_states.c.state != State.ARCHIVED.value,
            )
        ).scalar()
        if left:
            return []
        pins = conn.execute(
            select(
                dataset_pins.c.dataset_name, dataset_pins.c.dataset_version, dataset_pins.c.role
            ).where(dataset_pins.c.model_id == model_id, dataset_pins.c.version == version)
        ).all()
        conn.execute(
            delete(dataset_pins).where(
                dataset_pins.c.model_id == model_id, dataset_pins.c.version == version
            )
        )
        conn.execute(
            update(model_versions)
            .where(model_versions.c.model_id == model_id, model_versions.c.version == version)
            .values(archived=True)
        )
        return [f"{p.dataset_name}@{p.dataset_version} ({p.role})" for p in pins]

    # ------------------------------------------------------------------ rollback

    def _rollback_prod(
        self,
        op: WriteOp,
        row: Any,
        version: int,
        slice_: str,
        rows: list[SliceRow],
        reason: str,
        automated: bool,
        audit_extra: dict[str, Any] | None = None,
    ) -> TransitionResult:
        """PROMOTED -> ROLLED_BACK restores the last good version, and says what it cannot."""
        spec, conn, ts, actor = op.model, op.conn, op.ts, op.actor
        model_id = spec.model_id
        restored = last_good(rows)
        caveats: list[str] = []
        self._set_state(
            conn,
            model_id,
            version,
            slice_,
            row,
            State.ROLLED_BACK,
            percent=None,
            params={},
            ts=ts,
            actor=actor,
            reason=reason,
        )
        if restored is not None:
            rrow = op.row(restored, slice_)
            self._set_state(
                conn,
                model_id,
                restored,
                slice_,
                rrow,
                State.PROMOTED,
                percent=None,
                params={},
                ts=ts,
                actor=actor,
                reason=f"restored by rollback of version {version}",
            )
        else:
            caveats.append(
                f"no earlier version was promoted on slice {slice_!r}: the slice now has no "
                "prod version"
            )
        rc = spec.rollback_class
        if rc is RollbackClass.STATE_SNAPSHOT:
            snap = json.loads(self._version_row(conn, model_id, version).record_json).get(
                "rollback_snapshot_uri"
            )
            caveats.append(
                f"traffic only: state written while version {version} served must be restored "
                + (f"from snapshot {snap}" if snap else "but no snapshot was recorded")
            )
        elif rc is RollbackClass.IRREVERSIBLE:
            caveats.append(
                f"traffic only: version {version} is IRREVERSIBLE; what it already did cannot "
                "be undone"
            )
        generation = self._write_desired(conn, model_id, slice_, op.lock_row, ts)
        audit_id = op.audit(
            "rollback",
            {
                "slice": slice_,
                "from": State.PROMOTED.value,
                "to": State.ROLLED_BACK.value,
                "restored": restored,
                "rollback_class": rc.value,
                "caveats": caveats,
                "reason": reason,
                "automated": automated,
                "generation": generation,
                **(audit_extra or {}),
            },
            version=version,
        )
        return TransitionResult(
            model_id=model_id,
            version=version,
            slice=slice_,
            from_state=State.PROMOTED,
            to_state=State.ROLLED_BACK,
            generation=generation,
            restored_version=restored,
            caveats=caveats,
            audit_id=audit_id,
        )

    # ------------------------------------------------------------------ desired state

    def live_states(self, states: Iterable[State | str] | None = None) -> list[LiveState]:
        """Every (model, version, slice) in one of `states`, fleet-wide, in one query.

        Sensors call this each tick over hundreds of models, so it is one indexed scan and
        no per-model round trips. `since` is when the version entered its current state.
        """
        wanted = [parse_state(s).value for s in states] if states is not None else None
        q = select(
            slice_states.c.model_id,
            slice_states.c.version,
            slice_states.c.slice,
            slice_states.c.state,
            slice_states.c.percent,
            slice_states.c.updated_at,
        )
        if wanted is not None:
            q = q.where(slice_states.c.state.in_(wanted))
        q = q.order_by(slice_states.c.model_id, slice_states.c.slice, slice_states.c.version)
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(q).all()
        return [
            LiveState(
                r.model_id,
                int(r.version),
                r.slice,
                State(r.state),
                r.percent,
                _parse_ts(r.updated_at),
            )
            for r in rows
        ]

    def desired_state(self, model_id: str, slice: str = DEFAULT_SLICE) -> DesiredState:  # noqa: A002
        with self.engine.connect() as conn:
            raw = conn.execute(Q_DESIRED, {"m": model_id, "s": slice}).scalar()
            if raw is None:
                raise unknown_slice(self._spec(conn, model_id), slice)
        return DesiredState.model_validate_json(raw)

    def all_desired_states(self) -> list[DesiredState]:
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(
                select(model_slices.c.desired_json).order_by(
                    model_slices.c.model_id, model_slices.c.slice
                )
            ).scalars()
            return [DesiredState.model_validate_json(r) for r in rows]


def _compare(
    model_id: str,
    version: int,
    slice_: str,
    row: Any,
    current: State,
    expected: State | None,
    expected_percent: int | None,
) -> None:
    """The compare of compare-and-set: a move decided on a stale read is refused."""
    if (expected is not None and current is not expected) or (
        expected_percent is not None and row.percent != expected_percent
    ):
        pct = f" ({row.percent}%)" if row.percent is not None else ""
        want = (expected or current).value
        if expected_percent is not None:
            want += f" ({expected_percent}%)"
        raise ConflictError(
            f"conflict: {model_id}@{version} on slice {slice_!r} is {current.value}{pct}, "
            f"not {want} as expected; re-read and retry"
        )


def _target_params(
    model_id: str,
    slice_: str,
    target: State,
    percent: int | None,
    mode: ShadowMode | str | None,
    layer: str | None,
) -> tuple[dict[str, Any], int | None]:
    """The state's parameters (shadow mode, A/B layer) and its default percent."""
    params: dict[str, Any] = {}
    if target is State.SHADOW:
        params["mode"] = ShadowMode(mode or ShadowMode.live).value
        percent = percent or 100
    elif mode is not None:
        raise SpecError("--mode applies only to SHADOW; allowed: live, replay")
    if target is State.AB_TEST:
        params["layer"] = layer or f"{model_id}.{slice_}"
        percent = percent or 50
    elif layer is not None:
        raise SpecError("--layer applies only to AB_TEST")
    return params, percent
