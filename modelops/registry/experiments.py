"""The A/B contract the registry enforces: the plan, the minimum duration, layer capacity.

- Entering AB_TEST records the experiment: its orthogonal layer, its share of that layer,
  the split, and the plan (users per arm and days) from the fixed-horizon sample size of
  `modelops.evaluation.ab.plan_ab` on the model's declared `policy.ab`.
- At L2/L3, AB_TEST -> PROMOTED is refused before `policy.ab.min_days` (whole weekly
  cycles, 14 by default: weekday/weekend behaviour and novelty effects average out only
  over full weeks; Kohavi, Tang & Xu 2020, "Trustworthy Online Controlled Experiments")
  unless the sequential test recorded a conclusion with its planned power
  (`record_ab_conclusion`, which the online-metrics sensor calls when the A/B engine crosses
  its promotion boundary).
- A layer's users are split between the experiments running in it (the overlapping-layers
  design of Tang et al., "Overlapping Experiment Infrastructure", KDD 2010): the shares of
  the live experiments in one layer sum to at most its capacity (100% unless configured).
  An entry locks the layer's row, so two entries cannot both take its last share.

The hooks `enter_ab` and `check_ab_promotion` run inside a transition, under its slice
lock, and add to that transition's one audit entry; the refusals raise before commit, so a
refused move leaves no row behind.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from modelops.errors import (
    ABTooEarly,
    ConflictError,
    IllegalTransition,
    LayerFull,
    NotFoundError,
    SpecError,
)
from modelops.spec import DEFAULT_SLICE, ModelSpec, State, Tier
from modelops.store import db
from modelops.store.tables import ab_experiments, ab_layers, slice_states

from .checks import non_finite
from .records import canonical, parse_ts
from .statements import RegistryBase, WriteOp

__all__ = [
    "ExperimentOps",
    "ABExperiment",
    "LayerHolder",
    "LayerUsage",
    "enter_ab",
    "check_ab_promotion",
    "CONCLUDED_OUTCOMES",
    "DEFAULT_LAYER_CAPACITY",
]

DEFAULT_LAYER_CAPACITY = 100
MAX_LAYER = 200  # the layer column's width
# The A/B engine's outcomes that end a test (ABOutcome names); only PROMOTE with its planned
# power lifts the minimum duration.
CONCLUDED_OUTCOMES = ("PROMOTE", "NO_DETECTABLE_EFFECT")
_GATED = (Tier.L2, Tier.L3)

_e = ab_experiments
# An experiment is live while its version is still in the AB_TEST it entered (same epoch).
_LIVE_JOIN = and_(
    slice_states.c.model_id == _e.c.model_id,
    slice_states.c.version == _e.c.version,
    slice_states.c.slice == _e.c.slice,
    slice_states.c.epoch == _e.c.epoch,
    slice_states.c.state == State.AB_TEST.value,
)


class ABExperiment(BaseModel):
    """One entry to AB_TEST as recorded: where it runs, its plan, and how it ended."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    version: int
    slice: str
    layer: str
    share: int
    plan: dict[str, Any]
    started_at: datetime
    live: bool
    conclusion: dict[str, Any] | None = None
    concluded_at: datetime | None = None


class LayerHolder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    version: int
    slice: str
    share: int

    def __str__(self) -> str:
        return f"{self.model_id}@{self.version} slice {self.slice} ({self.share}%)"


class LayerUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    layer: str
    capacity: int
    used: int
    holders: list[LayerHolder]


# ---------------------------------------------------------------------- transition hooks


def enter_ab(op: WriteOp, version: int, slice_: str, percent: int, layer: str) -> dict[str, Any]:
    """Record the experiment of a version that just entered AB_TEST; return its plan.

    Called after the state row moved (its new epoch is what keeps the experiment live).
    `percent` is the candidate's share of the slice's traffic, so the split within the
    experiment is percent / share.
    """
    spec, conn = op.model, op.conn
    ab = spec.policy.ab
    share = ab.layer_share
    if not 0 < percent < share:
        raise SpecError(
            f"{spec.model_id}@{version}: the candidate's {percent}% of slice {slice_!r} must lie "
            f"inside the experiment's {share}% of layer {layer!r} with room for the prod arm; "
            f"allowed: --percent 1..{share - 1} (or raise policy.ab.layer_share)"
        )
    if not 0 < len(layer) <= MAX_LAYER:
        raise SpecError(
            f"A/B layer {layer[:40]!r}...: {len(layer)} characters; allowed: 1..{MAX_LAYER} "
            "(name it with --layer)"
        )
    capacity = _lock_layer(conn, layer, op.ts)
    holders = _holders(conn, layer)
    used = sum(h.share for h in holders)
    if used + share > capacity:
        held = ", ".join(map(str, holders)) or "nothing"
        raise LayerFull(
            f"layer {layer!r} cannot take {spec.model_id}@{version} slice {slice_} at {share}%: "
            f"{used}% of its {capacity}% is held by {held}; allowed: a share of at most "
            f"{max(capacity - used, 0)}% (policy.ab.layer_share), another layer (--layer), or "
            "entering after one of them ends"
        )
    plan = _plan(spec, op.ts, layer, share, percent)
    epoch = op.row(version, slice_).epoch
    conn.execute(
        _e.insert().values(
            model_id=spec.model_id,
            version=version,
            slice=slice_,
            epoch=epoch,
            layer=layer,
            share=share,
            plan_json=canonical(plan),
            started_at=op.ts.isoformat(),
        )
    )
    return plan


def check_ab_promotion(op: WriteOp, version: int, slice_: str, row: Any) -> dict[str, Any] | None:
    """Refuse an L2/L3 AB_TEST -> PROMOTED before the minimum duration, unless the
    sequential test concluded with its planned power; say which of the two allowed it."""
    spec = op.model
    if spec.tier not in _GATED:
        return None
    exp = _live_row(op.conn, spec.model_id, version, slice_, row.epoch)
    # An entry from before the A/B contract has no row: its state's timestamp is its start.
    started = parse_ts(exp.started_at if exp is not None else row.updated_at)
    plan = json.loads(exp.plan_json) if exp is not None else {}
    min_days = int(plan.get("min_days") or spec.policy.ab.min_days)
    elapsed = op.ts - started
    days = round(elapsed / timedelta(days=1), 2)
    if elapsed >= timedelta(days=min_days):
        return {"allowed_by": "duration", "days": days, "min_days": min_days}
    raw = exp.conclusion_json if exp is not None else None
    conclusion = json.loads(raw) if raw else None
    if conclusion and conclusion["outcome"] == "PROMOTE" and conclusion["concluded_with_power"]:
        return {"allowed_by": "conclusion", "days": days, "min_days": min_days}
    got = (
        f"the recorded conclusion is {conclusion['outcome']}"
        + ("" if conclusion["concluded_with_power"] else " without its planned power")
        if conclusion
        else "no sequential conclusion is recorded"
    )
    earliest = (started + timedelta(days=min_days)).isoformat(timespec="seconds")
    raise ABTooEarly(
        f"{spec.model_id}@{version} has been in AB_TEST on slice {slice_!r} for {days:g} of "
        f"the {min_days} days tier {spec.tier.value} requires, and {got}; allowed: PROMOTED "
        f"from {earliest}, or earlier once the sequential test concludes PROMOTE with its "
        "planned power (record_ab_conclusion), or ROLLED_BACK"
    )


def _plan(spec: ModelSpec, ts: datetime, layer: str, share: int, percent: int) -> dict[str, Any]:
    """The fixed-horizon plan (plan_ab) for the declared baseline and MDE at this split."""
    from modelops.evaluation.ab import plan_ab  # numpy: only when a test enters AB_TEST

    ab = spec.policy.ab
    split = percent / share
    enrolled = ab.daily_users * share / 100
    mde = ab.relative_mde if spec.policy.higher_is_better else -ab.relative_mde
    try:
        p = plan_ab(ab.baseline_rate, mde, ab.alpha, ab.power, math.ceil(enrolled), split)
    except ValueError as exc:
        raise SpecError(f"{spec.model_id}: policy.ab cannot be planned: {exc}") from None
    needed = float(p.days or 0.0)
    gated = spec.tier in _GATED
    # Whole weekly cycles at L2/L3, and never under the minimum.
    planned = max(ab.min_days, 7 * math.ceil(needed / 7)) if gated else math.ceil(needed)
    return {
        "layer": layer,
        "share": share,
        "percent": percent,
        "split": round(split, 6),
        "baseline_rate": ab.baseline_rate,
        "relative_mde": mde,
        "alpha": ab.alpha,
        "power": ab.power,
        "daily_users": math.ceil(enrolled),
        "n_candidate": p.treatment_users,
        "n_prod": p.control_users,
        "days_needed": round(needed, 2),
        "planned_days": planned,
        "sequential_days_max": round(float(p.sequential_days_max or 0.0), 2),
        "min_days": ab.min_days if gated else None,
        "earliest_promotion": (ts + timedelta(days=ab.min_days)).isoformat(timespec="seconds")
        if gated
        else None,
        "method": "two proportions, Cohen's h, two-sided alpha (plan_ab)",
    }


# ---------------------------------------------------------------------- statements


def _lock_layer(conn: Connection, layer: str, ts: datetime) -> int:
    """Create the layer's row if it is new, lock it, and return its capacity."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(
        dialect.insert(ab_layers)
        .values(layer=layer, capacity=DEFAULT_LAYER_CAPACITY, created_at=ts.isoformat())
        .on_conflict_do_nothing(index_elements=["layer"])
    )
    return int(
        conn.execute(
            select(ab_layers.c.capacity).where(ab_layers.c.layer == layer).with_for_update()
        ).scalar_one()
    )


def _holders(conn: Connection, layer: str) -> list[LayerHolder]:
    rows = conn.execute(
        select(_e.c.model_id, _e.c.version, _e.c.slice, _e.c.share)
        .select_from(_e.join(slice_states, _LIVE_JOIN))
        .where(_e.c.layer == layer)
        .order_by(_e.c.model_id, _e.c.slice, _e.c.version)
    ).all()
    return [LayerHolder(model_id=r[0], version=r[1], slice=r[2], share=r[3]) for r in rows]


def _live_row(conn: Connection, model_id: str, version: int, slice_: str, epoch: int) -> Any:
    return conn.execute(
        select(_e).where(
            _e.c.model_id == model_id,
            _e.c.version == version,
            _e.c.slice == slice_,
            _e.c.epoch == epoch,
        )
    ).first()


def _record(row: Any, live: bool) -> ABExperiment:
    return ABExperiment(
        model_id=row.model_id,
        version=row.version,
        slice=row.slice,
        layer=row.layer,
        share=row.share,
        plan=json.loads(row.plan_json),
        started_at=parse_ts(row.started_at),
        live=live,
        conclusion=json.loads(row.conclusion_json) if row.conclusion_json else None,
        concluded_at=parse_ts(row.concluded_at) if row.concluded_at else None,
    )


# ---------------------------------------------------------------------- registry calls


class ExperimentOps(RegistryBase):
    def record_ab_conclusion(
        self,
        model_id: str,
        version: int,
        *,
        actor: str,
        outcome: str,
        concluded_with_power: bool,
        slice: str = DEFAULT_SLICE,  # noqa: A002 - the domain's word
        reason: str = "",
        evidence: dict[str, Any] | None = None,
    ) -> ABExperiment:
        """Record how the running A/B test's sequential test ended (the sensor calls this
        with the A/B engine's decision). A test concludes once: the same conclusion again
        changes nothing, a different one is refused."""
        outcome = str(outcome).upper()
        if outcome not in CONCLUDED_OUTCOMES:
            raise SpecError(
                f"A/B outcome {outcome!r} does not conclude a test; allowed: "
                + ", ".join(CONCLUDED_OUTCOMES)
            )
        if not isinstance(concluded_with_power, bool):
            raise SpecError("concluded_with_power must be true or false")
        evidence = dict(evidence or {})
        if found := non_finite(evidence):
            raise SpecError(
                f"A/B evidence: {found[0]} is {found[1]}, not a finite number; "
                "allowed: finite numbers"
            )
        with self._write(actor, model_id=model_id, lock="slice", slice_=slice) as op:
            row = op.row(version, slice)
            if row.state != State.AB_TEST.value:
                raise IllegalTransition(
                    f"{model_id}@{version} is {row.state} on slice {slice!r}, not AB_TEST; "
                    "allowed: a conclusion for a version in AB_TEST"
                )
            exp = _live_row(op.conn, model_id, version, slice, row.epoch)
            if exp is None:
                raise NotFoundError(
                    f"{model_id}@{version} on slice {slice!r} entered AB_TEST before the "
                    "registry recorded A/B plans; allowed: promote after the minimum duration"
                )
            new = {
                "outcome": outcome,
                "concluded_with_power": concluded_with_power,
                "reason": reason,
                "evidence": evidence,
            }
            if exp.conclusion_json:
                old = json.loads(exp.conclusion_json)
                if (old["outcome"], old["concluded_with_power"]) == (
                    outcome,
                    concluded_with_power,
                ):
                    return op.unchanged(_record(exp, True))
                raise ConflictError(
                    f"{model_id}@{version} on slice {slice!r}: the A/B test already concluded "
                    f"{old['outcome']} at {exp.concluded_at}; a test concludes once"
                )
            op.conn.execute(
                update(_e)
                .where(_e.c.id == exp.id)
                .values(conclusion_json=canonical(new), concluded_at=op.ts.isoformat())
            )
            op.audit("ab_conclusion", {"slice": slice, **new}, version=version)
            return _record(_live_row(op.conn, model_id, version, slice, row.epoch), True)

    def set_layer_capacity(self, layer: str, capacity: int, *, actor: str) -> LayerUsage:
        """Configure how much of a layer's users its experiments may take together."""
        if not isinstance(capacity, int) or not 1 <= capacity <= 100:
            raise SpecError(f"layer capacity {capacity!r}; allowed: 1..100 (percent of users)")
        if not 0 < len(layer) <= MAX_LAYER:
            raise SpecError(f"layer name of {len(layer)} characters; allowed: 1..{MAX_LAYER}")
        with self._write(actor) as op:
            old = _lock_layer(op.conn, layer, op.ts)
            holders = _holders(op.conn, layer)
            used = sum(h.share for h in holders)
            usage = LayerUsage(layer=layer, capacity=capacity, used=used, holders=holders)
            if old == capacity:
                return op.unchanged(usage)
            if used > capacity:
                raise LayerFull(
                    f"layer {layer!r} cannot shrink to {capacity}%: {used}% is held by "
                    f"{', '.join(map(str, holders))}; allowed: at least {used}%"
                )
            op.conn.execute(
                update(ab_layers).where(ab_layers.c.layer == layer).values(capacity=capacity)
            )
            op.audit("set_layer_capacity", {"layer": layer, "from": old, "to": capacity})
            return usage

    def layer_usage(self, layer: str) -> LayerUsage:
        with db.read_tx(self.engine) as conn:
            cap = conn.execute(
                select(ab_layers.c.capacity).where(ab_layers.c.layer == layer)
            ).scalar()
            holders = _holders(conn, layer)
        return LayerUsage(
            layer=layer,
            capacity=DEFAULT_LAYER_CAPACITY if cap is None else int(cap),
            used=sum(h.share for h in holders),
            holders=holders,
        )

    def ab_experiment(
        self,
        model_id: str,
        version: int,
        slice: str = DEFAULT_SLICE,  # noqa: A002
    ) -> ABExperiment | None:
        """The version's latest A/B entry on the slice (live or ended), or None."""
        with db.read_tx(self.engine) as conn:
            row = conn.execute(
                select(_e)
                .where(_e.c.model_id == model_id, _e.c.version == version, _e.c.slice == slice)
                .order_by(_e.c.id.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            state = self._state_row(conn, model_id, version, slice)
        return _record(row, state.state == State.AB_TEST.value and state.epoch == row.epoch)

    def ab_experiments(self, model_id: str, version: int) -> list[ABExperiment]:
        """Every A/B entry of the version, on every slice, oldest first."""
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(
                select(_e, slice_states.c.state.label("live_state"))
                .select_from(_e.outerjoin(slice_states, _LIVE_JOIN))
                .where(_e.c.model_id == model_id, _e.c.version == version)
                .order_by(_e.c.id)
            ).all()
        return [_record(r, r.live_state is not None) for r in rows]
