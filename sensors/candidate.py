"""The candidate sensor: a version that passed its offline gates takes its next step.

| case | next step |
|---|---|
| the slice never had a prod version | promote (bootstrap); L2 and L3 wait for approvals |
| L0 | promote |
| L1, or L2 on an unchanged feature contract (weight refresh) | start shadow |
| L2 contract change, L3 | wait for approvals (logged once per version) |

Only the newest OFFLINE_PASSED version of a slice moves, and only when no other version is
already on its way through shadow, canary or A/B there (the registry would refuse it).
Everything the sensor needs comes from one fleet-wide `live_states` query; a version's
feature contract reference is read once and cached, as it never changes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, NamedTuple

import dagster as dg

from modelops.actions import ActionKind, ActionRequest
from modelops.fleet import Fleet
from modelops.registry import LiveState, Registry
from modelops.spec import ModelSpec, State, Tier
from resources import RegistryResource
from sensors.launch import ActionJobs, action_run_request, jobs_for

__all__ = [
    "CANDIDATE_SENSOR",
    "CANDIDATE_ACTOR",
    "CandidatePlan",
    "plan_candidates",
    "build_candidate_sensor",
]

CANDIDATE_SENSOR = "modelops_candidate_sensor"
CANDIDATE_ACTOR = "system:candidate"
_IN_FLIGHT = (
    State.APPROVED_SHADOW,
    State.SHADOW,
    State.APPROVED_CANARY,
    State.CANARY,
    State.AB_TEST,
)
_SCAN = (State.OFFLINE_PASSED, State.PROMOTED, State.DEPRECATED, *_IN_FLIGHT)
_MAX_WAITING = 5000
_LAUNCHES = (ActionKind.promote, ActionKind.start_shadow)


class CandidatePlan(NamedTuple):
    """What to do with one OFFLINE_PASSED version: an action, or why it waits."""

    live: LiveState
    action: ActionKind | None
    reason: str


class _Cache:
    """Immutable registry facts (model specs, versions' contract refs) kept across ticks."""

    def __init__(self) -> None:
        self.specs: dict[tuple[str, str], ModelSpec] = {}
        self.refs: dict[tuple[str, str, int], str | None] = {}

    def spec(self, reg: Registry, model_id: str) -> ModelSpec:
        k = (reg.url, model_id)
        if k not in self.specs:
            self.specs[k] = reg.get_model(model_id)
        return self.specs[k]

    def ref(self, reg: Registry, model_id: str, version: int) -> str | None:
        k = (reg.url, model_id, version)
        if k not in self.refs:
            self.refs[k] = reg.get_version(model_id, version).feature_contract_ref
        return self.refs[k]


def plan_candidates(reg: Registry, cache: _Cache | None = None) -> list[CandidatePlan]:
    """Decide, for the newest OFFLINE_PASSED version of every slice, its next step."""
    cache = cache or _Cache()
    by_slice: dict[tuple[str, str], list[LiveState]] = defaultdict(list)
    for ls in reg.live_states(_SCAN):
        by_slice[(ls.model_id, ls.slice)].append(ls)
    plans: list[CandidatePlan] = []
    for (model_id, _slice), rows in by_slice.items():
        passed = [r for r in rows if r.state is State.OFFLINE_PASSED]
        if not passed:
            continue
        cand = max(passed, key=lambda r: r.version)
        prod = next((r for r in rows if r.state is State.PROMOTED), None)
        deprecated = any(r.state is State.DEPRECATED for r in rows)
        busy = next((r for r in rows if r.state in _IN_FLIGHT and r.version != cand.version), None)
        spec = cache.spec(reg, model_id)
        tier = spec.tier
        if prod is None and not deprecated:
            if tier is Tier.L3:
                reason = (
                    "first version on the slice, tier L3: waiting for two approvals (one "
                    "outside the owning team) and a human to promote it"
                )
                plans.append(CandidatePlan(cand, None, reason))
            elif tier is Tier.L2:
                # The registry counts a first version as no weight refresh: one approval.
                reason = (
                    "first version on the slice, tier L2: waiting for one approval and a "
                    "human to promote it"
                )
                plans.append(CandidatePlan(cand, None, reason))
            else:
                reason = "first version on the slice: bootstrap promotion"
                plans.append(CandidatePlan(cand, ActionKind.promote, reason))
            continue
        if prod is None:
            plans.append(
                CandidatePlan(
                    cand,
                    None,
                    "the slice has no prod version but a last good one: restore it, or "
                    "promote by hand",
                )
            )
            continue
        if tier is Tier.L3:
            plans.append(
                CandidatePlan(
                    cand,
                    None,
                    "tier L3: waiting for approvals (two, one outside the owning team); "
                    "no automatic move",
                )
            )
            continue
        if tier is Tier.L0:
            plans.append(CandidatePlan(cand, ActionKind.promote, "tier L0: straight to PROMOTED"))
            continue
        if busy is not None:
            plans.append(
                CandidatePlan(
                    cand,
                    None,
                    f"slice busy: v{busy.version} is in {busy.state.value}; "
                    "waiting for it to finish or roll back",
                )
            )
            continue
        if tier is Tier.L1:
            plans.append(CandidatePlan(cand, ActionKind.start_shadow, "tier L1: automated path"))
            continue
        # L2: automated only for a weight refresh on the prod version's feature contract.
        if cache.ref(reg, model_id, cand.version) == cache.ref(reg, model_id, prod.version):
            plans.append(
                CandidatePlan(
                    cand,
                    ActionKind.start_shadow,
                    "tier L2 weight refresh on an unchanged feature contract: automated path",
                )
            )
            continue
        plans.append(
            CandidatePlan(
                cand,
                None,
                "tier L2 with a changed feature contract: waiting for an approval and a human "
                "to start it",
            )
        )
    return plans


def _load_cursor(raw: str | None) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    out: dict[str, Any] = {}
    for k in ("waiting", "launched"):
        v = data.get(k)
        out[k] = v if isinstance(v, dict) else {}
    return out


def build_candidate_sensor(
    fleet: Fleet,
    *,
    jobs: ActionJobs,
    name: str = CANDIDATE_SENSOR,
) -> dg.SensorDefinition:
    """The sensor that moves gate-passed versions on (see the module docstring's table).

    `jobs` maps each action kind to its job (`jobs.ACTION_JOBS`); this one launches promote
    and start_shadow.
    """
    cache = _Cache()
    targets = jobs_for(jobs, _LAUNCHES, name)

    @dg.sensor(
        name=name,
        jobs=targets,
        minimum_interval_seconds=fleet.durations.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Moves a version that passed its offline gates to its next state: "
        "promote (bootstrap, L0), shadow (L1, L2 weight refresh), or wait for approvals.",
    )
    def _sensor(context: dg.SensorEvaluationContext, registry: RegistryResource) -> dg.SensorResult:
        before = _load_cursor(context.cursor)
        waiting_before: dict[str, Any] = before["waiting"]
        launched_before: dict[str, Any] = before["launched"]
        waiting: dict[str, int] = {}
        launched: dict[str, int] = {}
        requests: list[dg.RunRequest] = []
        for plan in plan_candidates(registry.get(), cache):
            ls = plan.live
            key = f"{ls.model_id}/{ls.slice}"
            if plan.action is None:
                waiting[key] = ls.version
                if waiting_before.get(key) != ls.version:
                    context.log.info(f"{key} v{ls.version} OFFLINE_PASSED: {plan.reason}")
                continue
            req = ActionRequest(
                model_id=ls.model_id,
                slice=ls.slice,
                version=ls.version,
                expected=State.OFFLINE_PASSED.value,
                reason=plan.reason,
                actor=CANDIDATE_ACTOR,
            )
            rr = action_run_request(plan.action, req)
            launched[key] = ls.version
            if launched_before.get(key) != ls.version:  # the run key dedupes later ticks
                context.log.info(
                    f"{key} v{ls.version} OFFLINE_PASSED -> {plan.action.value} "
                    f"(run key {rr.run_key}): {plan.reason}"
                )
            requests.append(rr)
        cursor = json.dumps(
            {
                "waiting": dict(sorted(waiting.items())[:_MAX_WAITING]),
                "launched": dict(sorted(launched.items())[:_MAX_WAITING]),
            },
            sort_keys=True,
        )
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=cursor)
        return dg.SensorResult(
            skip_reason=f"no candidate to move ({len(waiting)} waiting)", cursor=cursor
        )

    return _sensor
