""" "Why is this model performing differently today?": the design's diagnosis tree, walked in
order, each step answering from what the registry (and, when the caller has it, the
prediction log) can show, and saying so when it cannot.

1. Did the weights hash change? (the prod version at `since` against the one now)
2. Which features drifted, on which slices? (PSI / JS distance, `evaluation.drift`, against
   the version's training reference when the caller has one, else the window before `since`)
3. Which models depend on those features? (lineage's reverse lookup, with how many are L2+)
4. Did the output distribution shift? (the same test on the prediction)
5. Did the feature contract (schema) or the signature change?
6. What happened in the audit log since `since`?

The registry part is here, in the core; the observed requests come from the caller
(`Observations`), because the prediction log belongs to the serving plane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelops.spec import DEFAULT_SLICE, ModelVersion, State, Tier

from .audit_ops import AuditOps
from .lineage import LineageOps

__all__ = ["DiagnosisOps", "Diagnosis", "DiagnosisStep", "Observations"]

_L2_PLUS = (Tier.L2, Tier.L3)
_LIVE = (State.SHADOW, State.CANARY, State.AB_TEST)


@dataclass
class Observations:
    """Requests the serving plane logged: since `since` (current) and the window of the same
    length before it (before). Columns are arrays of one length per window."""

    source: str
    current: dict[str, Any] = field(default_factory=dict)
    current_prediction: Any = None
    current_segments: Any = None
    before: dict[str, Any] = field(default_factory=dict)
    before_prediction: Any = None
    rows_current: int = 0
    rows_before: int = 0


class DiagnosisStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int
    question: str
    answer: str
    changed: bool | None = Field(description="True: a lead; False: ruled out; None: unknown")
    details: dict[str, Any] = Field(default_factory=dict)


class Diagnosis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str
    slice: str
    since: datetime
    now: datetime
    prod_then: int | None
    prod_now: int | None
    steps: list[DiagnosisStep]


class DiagnosisOps(LineageOps, AuditOps):
    def diagnose(
        self,
        model_id: str,
        *,
        slice: str = DEFAULT_SLICE,  # noqa: A002 - the domain's word
        since: datetime,
        observations: Observations | None = None,
        reference: Any = None,
        reference_note: str = "",
    ) -> Diagnosis:
        """Walk the tree for `model_id` on `slice` over (since, now]. `reference`: the prod
        version's training `DriftReference`, if the caller could load one."""
        spec = self.get_model(model_id)
        if slice not in spec.slices:
            from .checks import unknown_slice

            raise unknown_slice(spec, slice)
        now = self._now()
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        versions = {v.version: v for v in self.list_versions(model_id)}
        then_v, now_v = _prod_at(versions, slice, since), _prod_at(versions, slice, now)
        steps = [_weights(versions, slice, then_v, now_v)]
        drift = _drift(spec, observations, reference, reference_note)
        steps.append(drift)
        steps.append(self._dependents(drift))
        steps.append(_outputs(spec, observations, reference, reference_note))
        steps.append(_contract(versions, then_v, now_v))
        steps.append(self._audit_since(model_id, slice, since))
        return Diagnosis(
            model_id=model_id,
            slice=slice,
            since=since,
            now=now,
            prod_then=then_v,
            prod_now=now_v,
            steps=steps,
        )

    def _dependents(self, drift: DiagnosisStep) -> DiagnosisStep:
        q = "Which models depend on those features (how many, how many L2 or above)?"
        feats = sorted(set(drift.details.get("drifted", [])))
        for names in drift.details.get("drifted_by_slice", {}).values():
            feats = sorted(set(feats) | set(names))
        feats = [f for f in feats if f != _PREDICTION]
        if drift.changed is None:
            return DiagnosisStep(
                step=3, question=q, answer="cannot tell: step 2 found no data", changed=None
            )
        if not feats:
            return DiagnosisStep(
                step=3, question=q, answer="no drifted feature to trace", changed=False
            )
        per: dict[str, Any] = {}
        tiers: dict[str, str] = {}
        parts = []
        for f in feats:
            models = sorted({k.model_id for k in self.dependents_of_feature(f)})
            for m in models:
                if m not in tiers:
                    tiers[m] = self.get_model(m).tier.value
            high = [m for m in models if Tier(tiers[m]) in _L2_PLUS]
            per[f] = {"models": models, "l2_plus": high}
            parts.append(
                f"{f}: {len(models)} model(s), {len(high)} at L2 or above"
                + (f" ({', '.join(high)})" if high else "")
            )
        return DiagnosisStep(
            step=3,
            question=q,
            answer="; ".join(parts),
            changed=any(v["models"] for v in per.values()),
            details={"features": per, "tiers": tiers},
        )

    def _audit_since(self, model_id: str, slice_: str, since: datetime) -> DiagnosisStep:
        q = f"What happened in the audit log since {since.isoformat(timespec='seconds')}?"
        entries = [
            e
            for e in self.audit_entries(model_id)
            if _ts(e.ts) >= since and e.payload.get("slice", slice_) == slice_
        ]
        lines = []
        for e in entries:
            p = e.payload
            what = f"{p['from']} -> {p['to']}" if "from" in p and "to" in p else ""
            ver = f"@{e.version}" if e.version is not None else ""
            lines.append(
                f"{e.ts} {e.action}{ver} by {e.actor}"
                + (f" ({what})" if what else "")
                + (f": {p['reason']}" if p.get("reason") else "")
            )
        return DiagnosisStep(
            step=6,
            question=q,
            answer=f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
            + (": " + "; ".join(lines[-5:]) if lines else ""),
            changed=bool(entries),
            details={"entries": lines},
        )


# ---------------------------------------------------------------------- the steps

_PREDICTION = "__prediction__"


def _ts(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _prod_at(versions: dict[int, ModelVersion], slice_: str, at: datetime) -> int | None:
    """The version PROMOTED on the slice at `at`, replayed from the state histories."""
    events = sorted(
        (h.ts if h.ts.tzinfo else h.ts.replace(tzinfo=UTC), v.version, h.state)
        for v in versions.values()
        for h in v.state_history
        if h.slice == slice_
    )
    prod = None
    for ts, v, st in events:
        if ts > at:
            break
        if st is State.PROMOTED:
            prod = v
        elif v == prod:
            prod = None
    return prod


def _weights(
    versions: dict[int, ModelVersion], slice_: str, then_v: int | None, now_v: int | None
) -> DiagnosisStep:
    q = "Did the weights hash change?"
    live = [
        f"v{v.version} {v.state[slice_].value}"
        + (f" {v.canary_percent[slice_]}%" if slice_ in v.canary_percent else "")
        for v in versions.values()
        if v.state.get(slice_) in _LIVE
    ]
    also = f"; also taking traffic or mirrored now: {', '.join(live)}" if live else ""
    details: dict[str, Any] = {"prod_then": then_v, "prod_now": now_v, "live_candidates": live}
    if now_v is None:
        return DiagnosisStep(
            step=1,
            question=q,
            answer=f"no version is PROMOTED now{also}",
            changed=None,
            details=details,
        )
    h_now = versions[now_v].weights_hash
    details["hash_now"] = h_now
    if then_v is None:
        answer, changed = f"v{now_v} became prod in the window (sha256 {h_now[:12]}){also}", True
    else:
        h_then = versions[then_v].weights_hash
        details["hash_then"] = h_then
        changed = h_then != h_now
        if then_v == now_v:
            answer = f"no: v{now_v} was prod then and is now (sha256 {h_now[:12]})"
        elif changed:
            answer = f"yes: prod was v{then_v} (sha256 {h_then[:12]}), is v{now_v} ({h_now[:12]})"
        else:
            answer = f"no: prod moved v{then_v} -> v{now_v} with identical weights"
        answer += also
    return DiagnosisStep(
        step=1, question=q, answer=answer, changed=changed or bool(live), details=details
    )


def _baseline(
    obs: Observations, reference: Any, reference_note: str, columns: list[str]
) -> tuple[Any, str]:
    """The training reference when it covers the columns, else one built from the window
    before `since`; and a phrase naming which."""
    from modelops.evaluation.drift import build_reference

    if reference is not None and all(c in reference.features for c in columns):
        return reference, "the version's training reference"
    before = {c: obs.before[c] for c in columns if c in obs.before}
    pred = obs.before_prediction if _PREDICTION in columns else None
    if len(before) < len([c for c in columns if c != _PREDICTION]) or (
        _PREDICTION in columns and pred is None
    ):
        return None, ""
    why = f" ({reference_note})" if reference_note else " (no training reference stored)"
    return build_reference(before, prediction=pred), f"the window before since{why}"


def _policy(spec: Any) -> Any:
    from modelops.evaluation.drift import DriftPolicy

    d = getattr(spec.policy, "drift", None)
    if d is None:
        return DriftPolicy()
    return DriftPolicy(
        psi_threshold=d.psi_threshold, js_threshold=d.js_threshold, min_rows=d.min_rows
    )


def _drift(spec: Any, obs: Observations | None, reference: Any, note: str) -> DiagnosisStep:
    from modelops.evaluation.drift import drift_report

    q = "Which features drifted, on which slices?"
    if obs is None or obs.rows_current == 0:
        src = obs.source if obs is not None else "no prediction log was given"
        return DiagnosisStep(
            step=2,
            question=q,
            changed=None,
            answer=f"cannot tell: no requests logged in the window ({src})",
        )
    cols = sorted(obs.current)
    if not cols:
        return DiagnosisStep(
            step=2,
            question=q,
            changed=None,
            answer=f"cannot tell: {obs.rows_current} requests were logged without their "
            "features (the model's policy does not log inputs)",
        )
    ref, which = _baseline(obs, reference, note, cols)
    if ref is None:
        return DiagnosisStep(
            step=2,
            question=q,
            changed=None,
            answer="cannot tell: no training reference and no requests before the window "
            f"to compare with ({obs.rows_current} requests in it)",
        )
    pol = _policy(spec)
    rep = drift_report(ref, {c: obs.current[c] for c in cols}, pol, slices=obs.current_segments)
    judged = [f for f, d in rep.features.items() if d.judged]
    by_slice = {s: v for s, v in rep.drifted_by_slice.items() if v}
    details = {
        "baseline": which,
        "rows": obs.rows_current,
        "drifted": rep.drifted,
        "drifted_by_slice": by_slice,
        "features": {f: d.model_dump() for f, d in rep.features.items()},
    }
    if not judged:
        return DiagnosisStep(
            step=2,
            question=q,
            changed=None,
            details=details,
            answer=f"cannot tell: {obs.rows_current} requests, fewer than the {pol.min_rows} "
            "a verdict needs",
        )

    def _fmt(f: str) -> str:
        d = rep.features[f]
        return f"{f} (PSI {d.psi:.2f}, JS {d.js_distance:.2f})"

    answer = (
        "drifted: " + ", ".join(_fmt(f) for f in rep.drifted)
        if rep.drifted
        else f"none of {len(judged)} features drifted overall"
    )
    if by_slice:
        answer += "; by slice: " + "; ".join(f"{s}: {', '.join(v)}" for s, v in by_slice.items())
    answer += f"; against {which}, {obs.rows_current} requests"
    return DiagnosisStep(
        step=2, question=q, answer=answer, details=details, changed=bool(rep.drifted or by_slice)
    )


def _outputs(spec: Any, obs: Observations | None, reference: Any, note: str) -> DiagnosisStep:
    import numpy as np

    from modelops.evaluation.drift import drift_report

    q = "Did the output distribution shift?"
    if obs is None or obs.current_prediction is None or obs.rows_current == 0:
        return DiagnosisStep(
            step=4,
            question=q,
            changed=None,
            answer="cannot tell: no logged predictions in the window",
        )
    ref, which = _baseline(obs, reference, note, [_PREDICTION])
    if ref is None:
        return DiagnosisStep(
            step=4,
            question=q,
            changed=None,
            answer="cannot tell: no training reference for the prediction and no requests "
            "before the window",
        )
    pol = _policy(spec)
    rep = drift_report(ref, {}, pol, prediction=obs.current_prediction, slices=obs.current_segments)
    d = rep.features[_PREDICTION]
    mean_now = float(np.nanmean(np.asarray(obs.current_prediction, dtype=float)))
    details: dict[str, Any] = {
        "baseline": which,
        "prediction": d.model_dump(),
        "mean_now": mean_now,
    }
    mean_then = ""
    if obs.before_prediction is not None and len(obs.before_prediction):
        m = float(np.nanmean(np.asarray(obs.before_prediction, dtype=float)))
        details["mean_before"] = m
        mean_then = f" (mean {m:.4g} -> {mean_now:.4g})"
    if not d.judged:
        return DiagnosisStep(
            step=4,
            question=q,
            changed=None,
            details=details,
            answer=f"cannot tell: fewer than {pol.min_rows} predictions",
        )
    slices = [s for s, v in rep.drifted_by_slice.items() if _PREDICTION in v]
    verdict = "yes" if d.drifted else "no"
    answer = f"{verdict}: PSI {d.psi:.2f}, JS {d.js_distance:.2f} against {which}{mean_then}"
    if slices:
        answer += f"; shifted on slices {', '.join(slices)}"
    return DiagnosisStep(
        step=4, question=q, answer=answer, details=details, changed=d.drifted or bool(slices)
    )


def _contract(
    versions: dict[int, ModelVersion], then_v: int | None, now_v: int | None
) -> DiagnosisStep:
    q = "Did the contract or schema version change?"
    if then_v is None or now_v is None:
        return DiagnosisStep(
            step=5,
            question=q,
            changed=None,
            answer="cannot compare: no prod version at one end of the window",
        )
    a, b = versions[then_v], versions[now_v]
    details = {
        "contract_then": a.feature_contract_ref,
        "contract_now": b.feature_contract_ref,
        "signature_changed": a.signature != b.signature,
    }
    if then_v == now_v:
        return DiagnosisStep(
            step=5,
            question=q,
            changed=False,
            details=details,
            answer=f"no: the same version (contract {b.feature_contract_ref})",
        )
    changes = []
    if a.feature_contract_ref != b.feature_contract_ref:
        changes.append(f"contract {a.feature_contract_ref} -> {b.feature_contract_ref}")
    if a.signature != b.signature:
        changes.append("input/output signature changed")
    answer = (
        ("yes: " + "; ".join(changes))
        if changes
        else (f"no: v{then_v} and v{now_v} share contract {b.feature_contract_ref} and signature")
    )
    return DiagnosisStep(step=5, question=q, answer=answer, changed=bool(changes), details=details)
