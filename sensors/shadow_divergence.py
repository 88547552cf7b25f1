"""The shadow divergence sensor: a shadow whose outputs diverge from prod's fails.

Each tick reads every SHADOW version fleet-wide, joins its logged answers (arm "shadow", the
live mirror or a replay) to prod's on request id, and runs the shadow divergence engine
(`modelops.evaluation.shadow`) under the model's registered policy (`spec.policy.shadow`).
Beyond a threshold it launches the transition SHADOW -> FAILED, with every reason the engine
gave in the run's config, hence in the registry's audit entry. Within the thresholds, or on
too few pairs (inconclusive), it launches nothing: moving a passing shadow on is the online
metrics sensor's job.

What the verdict cannot say: shadow is infrastructure and calibration validation, not a
predictor of closed-loop metrics (the caveat goes into every failure's reason).
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg

from modelops.actions import ActionKind, ActionRequest
from modelops.evaluation.decision import CANDIDATE_ARMS, PROD_ARM
from modelops.evaluation.logged import shadow_from_log
from modelops.evaluation.shadow import SHADOW_CAVEAT, ShadowReport
from modelops.fleet import Fleet
from modelops.registry import LiveState, Registry
from modelops.spec import ModelSpec, State
from resources import PredictionLogResource, RegistryResource
from sensors.launch import ActionJobs, action_run_request, jobs_for

__all__ = [
    "SHADOW_ACTOR",
    "SHADOW_DIVERGENCE_SENSOR",
    "ShadowDivergenceEvaluator",
    "ShadowVerdict",
    "build_shadow_divergence_sensor",
    "failure_reason",
    "shadow_run_request",
]

SHADOW_DIVERGENCE_SENSOR = "modelops_shadow_divergence_sensor"
SHADOW_ACTOR = "system:shadow-divergence"
_PROD_SLACK_S = 60.0  # prod logs its answer before the mirror's: read a little earlier


class ShadowVerdict:
    """What one tick found for one shadow version."""

    __slots__ = ("live", "prod_version", "report")

    def __init__(self, live: LiveState, prod_version: int, report: ShadowReport) -> None:
        self.live = live
        self.prod_version = prod_version
        self.report = report


class ShadowDivergenceEvaluator:
    """One tick's work, apart from Dagster so tests and the benchmark see inside.

    `max_pairs` bounds what one tick reads per shadow (the newest requests are judged on the
    next ticks as the window grows; the engine is cheap, reading the log is not)."""

    def __init__(self, fleet: Fleet, *, max_pairs: int = 100_000) -> None:
        self.fleet = fleet
        self.max_pairs = max_pairs
        self._specs: dict[tuple[str, str], ModelSpec] = {}

    def _spec(self, reg: Registry, model_id: str) -> ModelSpec:
        k = (reg.url, model_id)
        if k not in self._specs:
            self._specs[k] = reg.get_model(model_id)
        return self._specs[k]

    def judge(self, reg: Registry, reader: Any, ls: LiveState, prod_version: int) -> ShadowReport:
        """The divergence report of one shadow version against prod since it entered SHADOW."""
        since = ls.since.timestamp()
        shadow = reader.records(
            ls.model_id,
            ls.version,
            since_ts=since,
            arm=CANDIDATE_ARMS[State.SHADOW],
            slice=ls.slice,
            limit=self.max_pairs,
        )
        prod: list[Any] = []
        if shadow:
            first = min(r.ts for r in shadow)
            last = max(r.ts for r in shadow)
            prod = reader.records(
                ls.model_id,
                prod_version,
                since_ts=max(since - _PROD_SLACK_S, first - _PROD_SLACK_S),
                until_ts=last + 1.0,
                arm=PROD_ARM,
                slice=ls.slice,
                limit=4 * self.max_pairs,
            )
        policy = self._spec(reg, ls.model_id).policy
        # Calibration is measured on the primary metric's outcomes (a click, a label) when
        # every pair has one; the outcomes are those of what prod served (the caveat).
        labels = reader.outcome_values([r.request_id for r in shadow], policy.primary_metric)
        return shadow_from_log(prod, shadow, policy.shadow, labels=labels or None)

    def evaluate(self, reg: Registry, reader: Any, log: Any | None = None) -> list[ShadowVerdict]:
        live = reg.live_states((State.SHADOW, State.PROMOTED))
        prod = {(x.model_id, x.slice): x.version for x in live if x.state is State.PROMOTED}
        out: list[ShadowVerdict] = []
        for ls in live:
            if ls.state is not State.SHADOW:
                continue
            pv = prod.get((ls.model_id, ls.slice))
            if pv is None:
                continue  # the registry refuses SHADOW without prod; nothing to compare
            try:
                report = self.judge(reg, reader, ls, pv)
            except Exception as exc:  # noqa: BLE001 - one unreadable model must not stop the fleet
                if log is not None:
                    log.warning(f"{ls.model_id}/{ls.slice} v{ls.version}: not judged: {exc}")
                continue
            out.append(ShadowVerdict(ls, pv, report))
        return out


def failure_reason(report: ShadowReport, prod_version: int) -> str:
    """The audit entry's reason: every threshold crossed, then the caveat."""
    return (
        f"shadow divergence vs prod v{prod_version} over {report.n_pairs} pairs: "
        + "; ".join(report.reasons)
        + f". Caveat: {SHADOW_CAVEAT}"
    )


def shadow_run_request(v: ShadowVerdict) -> dg.RunRequest | None:
    """SHADOW -> FAILED for a failed verdict (compare-and-set on SHADOW); else nothing."""
    if v.report.verdict != "fail":
        return None
    ls = v.live
    req = ActionRequest(
        model_id=ls.model_id,
        slice=ls.slice,
        version=ls.version,
        target=State.FAILED.value,
        expected=State.SHADOW.value,
        reason=failure_reason(v.report, v.prod_version),
        actor=SHADOW_ACTOR,
    )
    return action_run_request(ActionKind.transition, req)


def build_shadow_divergence_sensor(
    fleet: Fleet,
    *,
    jobs: ActionJobs,
    name: str = SHADOW_DIVERGENCE_SENSOR,
) -> dg.SensorDefinition:
    """The sensor over the whole fleet; it launches only the transition job (to FAILED)."""
    evaluator = ShadowDivergenceEvaluator(fleet)
    targets = jobs_for(jobs, (ActionKind.transition,), name)

    @dg.sensor(
        name=name,
        jobs=targets,
        minimum_interval_seconds=fleet.durations.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Compares each shadow version's logged answers with prod's on the same "
        "requests and fails a shadow whose divergence crosses its model's policy.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        registry: RegistryResource,
        predlog: PredictionLogResource,
    ) -> dg.SensorResult:
        try:
            last = json.loads(context.cursor) if context.cursor else {}
        except ValueError:
            last = {}
        last = last if isinstance(last, dict) else {}
        verdicts = evaluator.evaluate(registry.get(), predlog.reader(), context.log)
        requests: list[dg.RunRequest] = []
        seen: dict[str, str] = {}
        for v in verdicts:
            key = f"{v.live.model_id}/{v.live.slice}/v{v.live.version}"
            seen[key] = v.report.verdict
            rr = shadow_run_request(v)
            if rr is None:
                if last.get(key) != v.report.verdict:
                    context.log.info(f"{key} SHADOW: {v.report.verdict} - {v.report.reasons[0]}")
                continue
            context.log.warning(
                f"{key} SHADOW -> FAILED (run key {rr.run_key}): " + "; ".join(v.report.reasons)
            )
            requests.append(rr)
        cursor = json.dumps(dict(sorted(seen.items())), sort_keys=True)
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=cursor)
        return dg.SensorResult(
            skip_reason=f"{len(verdicts)} shadow version(s) judged, none beyond its policy",
            cursor=cursor,
        )

    return _sensor
