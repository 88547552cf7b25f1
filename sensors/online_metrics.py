"""The online-metrics sensor: live versions, their prediction-log windows, one decision each.

Each tick reads every live version fleet-wide in one registry query, reads one prediction-log
window per (model, slice, window start) (the reader returns every version and arm of the
model in that call, so prod's baseline comes with the candidate's numbers), asks the
decision engine, and launches the step it decides as a job run. It never acts itself: the
run's compare-and-set (`expected`, `expected_percent`) makes a decision taken on a stale
read fail cleanly, and the deterministic run key makes one breach launch one rollback no
matter how many ticks see it.

What is watched: SHADOW, CANARY and AB_TEST versions, and a PROMOTED version for
`durations.watch_s` after its promotion when there is a last good version to go back to.
The window starts when the version entered its current state, except for a canary, whose
windows cover every step since it entered CANARY (the harm test accumulates users across
steps; the current step's users are read apart for the sample-ratio check); for a promoted
version it also covers an equal span before the promotion, which is the previous prod's
baseline.

The default engine is `SequentialRule` (always-valid tests over per-user ratios). Holds that
owners must hear about (SRM, an A/B guardrail trip, "no detectable effect") are written once
per episode as registry alerts (audit entries); an A/B test's conclusion is recorded with
the registry before its promotion is launched; every launched run carries the decision's
evidence (lift, interval, users, state of the test) as the `modelops/evidence` tag.

Monitoring in force changes the thresholds (`SequentialRule.under_monitoring`, read for the
whole fleet in one query per tick, `modelops.registry.monitoring`): after a break-glass the
(model, slice) is under heightened monitoring until its end (error-rate and p99 limits
halved, harm margin unchanged), and its promoted version is judged on every tick until then
even past the post-promotion watch; inside an IRREVERSIBLE rollback's decay window the
thresholds are relaxed by the window's factor. The decision's details (so the evidence tag)
say which and until when, and the model's asset gets one observation per heightened period.
A second sensor from the same builder (`heightened_only`, `HEIGHTENED_SENSOR`) ticks three
times as often and judges only what is under heightened monitoring: that is the shorter
interval; when nothing is, its tick is the one monitoring read. Run keys are deterministic,
so the two sensors seeing one breach launch one run.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from modelops.actions import ActionKind, ActionRequest, action_run_fields
from modelops.evaluation.decision import (
    CANDIDATE_ARMS,
    PROD_ARM,
    Decision,
    DecisionEngine,
    Evidence,
    Verdict,
)
from modelops.evaluation.sequential_rule import SequentialRule
from modelops.fleet import Fleet, OnlinePolicy
from modelops.registry import LiveState, Registry
from modelops.registry.monitoring import Monitoring, monitoring_in_force
from modelops.spec import ModelClass, ModelSpec, RollbackClass, State, Tier
from resources import PredictionLogResource, RegistryResource
from sensors.launch import ActionJobs, jobs_for

__all__ = [
    "HEIGHTENED_SENSOR",
    "heightened_interval_s",
    "ONLINE_METRICS_SENSOR",
    "ONLINE_ACTOR",
    "build_online_metrics_sensor",
    "OnlineMetricsEvaluator",
    "run_request_for",
]

ONLINE_METRICS_SENSOR = "modelops_online_metrics_sensor"
HEIGHTENED_SENSOR = "modelops_heightened_monitoring_sensor"
ONLINE_ACTOR = "system:online-metrics"
_WATCHED = (State.SHADOW, State.CANARY, State.AB_TEST, State.PROMOTED)
_MAX_CURSOR_ENTRIES = 2000
_LAUNCHES = (ActionKind.canary_step, ActionKind.start_ab, ActionKind.promote, ActionKind.rollback)
_MAX_ALERT_KEYS = 2000
EVIDENCE_TAG = "modelops/evidence"
ALERT_PREFIX = "online_"  # registry alert kinds: online_srm, online_ab_guardrail, ...


def _key(ls: LiveState) -> str:
    return f"{ls.model_id}/{ls.slice}/v{ls.version}"


def _summary(d: Decision, ls: LiveState) -> str:
    pct = f" {ls.percent}" if ls.percent is not None else ""
    return f"{d.verdict.value} v{ls.version} {ls.state.value}{pct}"


class OnlineMetricsEvaluator:
    """One tick's work, kept apart from Dagster so the benchmark and tests can see inside.

    It holds caches that are safe across ticks because what they cache never changes: a
    model's spec and a version's feature contract reference are immutable in the registry.
    """

    def __init__(
        self,
        fleet: Fleet,
        engine: DecisionEngine | None = None,
        *,
        clock: Callable[[], float] = time.time,
        heightened_only: bool = False,
    ) -> None:
        self.fleet = fleet
        self.heightened_only = heightened_only
        self.engine: DecisionEngine = engine or SequentialRule()
        self.clock = clock
        self._online: dict[str, OnlinePolicy] = {m.model_id: m.online for m in fleet.models}
        self._specs: dict[tuple[str, str], ModelSpec] = {}
        self._contract_refs: dict[tuple[str, str, int], str | None] = {}
        # When a canary entered CANARY, per (registry, model, slice, version, step start):
        # immutable once found, like the A/B plan recorded on entry to AB_TEST.
        self._canary_starts: dict[tuple[str, str, str, int, float], float] = {}
        self._ab_plans: dict[tuple[str, str, str, int, float], dict[str, Any] | None] = {}
        self.monitoring: dict[tuple[str, str], Monitoring] = {}  # as read on the last tick

    # ------------------------------------------------------------------ caches

    def _spec(self, reg: Registry, model_id: str) -> ModelSpec:
        k = (reg.url, model_id)
        spec = self._specs.get(k)
        if spec is None:
            spec = self._specs[k] = reg.get_model(model_id)
        return spec

    def _contract_ref(self, reg: Registry, model_id: str, version: int) -> str | None:
        k = (reg.url, model_id, version)
        if k not in self._contract_refs:
            self._contract_refs[k] = reg.get_version(model_id, version).feature_contract_ref
        return self._contract_refs[k]

    def _canary_start(self, reg: Registry, ls: LiveState) -> float:
        """When the version entered CANARY (its latest entry): the harm test's first user.
        The first step's start is its own; a later step's is found once in the audit log."""
        since = ls.since.timestamp()
        if ls.percent is None or ls.percent <= self.fleet.canary_ladder[0]:
            return since
        k = (reg.url, ls.model_id, ls.slice, ls.version, since)
        if k not in self._canary_starts:
            start = since
            for entry in reg.audit_entries(ls.model_id):
                p = entry.payload
                if (
                    entry.version == ls.version
                    and p.get("slice") == ls.slice
                    and p.get("to") == State.CANARY.value
                    and p.get("from") != State.CANARY.value
                ):
                    start = _ts(entry.ts)
            self._canary_starts[k] = min(start, since)
        return self._canary_starts[k]

    def _ab_plan(self, reg: Registry, ls: LiveState) -> dict[str, Any] | None:
        """The plan the registry recorded on entry to AB_TEST, when it records plans."""
        lookup = getattr(reg, "ab_experiment", None)
        if lookup is None:
            return None
        k = (reg.url, ls.model_id, ls.slice, ls.version, ls.since.timestamp())
        if k not in self._ab_plans:
            try:
                exp = lookup(ls.model_id, ls.version, ls.slice)
            except Exception:  # noqa: BLE001 - no plan: the policy's split and horizon apply
                exp = None
            self._ab_plans[k] = dict(exp.plan) if exp is not None and exp.live else None
        return self._ab_plans[k]

    # ------------------------------------------------------------------ one tick

    def targets(
        self, reg: Registry, now: float
    ) -> tuple[list[LiveState], dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """Live versions to judge this tick, each (model, slice)'s prod version, and the last
        good version of each watched promotion. A promotion under heightened monitoring is
        judged until that ends, even past the post-promotion watch."""
        self.monitoring = monitoring_in_force(reg, datetime.fromtimestamp(now, UTC))
        if self.heightened_only:
            hot = {k for k, m in self.monitoring.items() if m.heightened_until is not None}
            if not hot:
                return [], {}, {}  # the common case: one query and done
            live = [ls for ls in reg.live_states(_WATCHED) if (ls.model_id, ls.slice) in hot]
        else:
            live = reg.live_states(_WATCHED)
        prod = {(ls.model_id, ls.slice): ls.version for ls in live if ls.state is State.PROMOTED}
        watch_s = self.fleet.durations.watch_s
        out: list[LiveState] = []
        rollback_to: dict[tuple[str, str], int] = {}
        for ls in live:
            if ls.state is State.PROMOTED:
                mon = self.monitoring.get((ls.model_id, ls.slice))
                heightened = mon is not None and mon.heightened_until is not None
                if now - ls.since.timestamp() > watch_s and not heightened:
                    continue  # the common case: no registry call on this path
                target = reg.desired_state(ls.model_id, ls.slice).rollback_target
                if target is None:
                    continue  # nothing to go back to: a rollback would promise nothing
                rollback_to[(ls.model_id, ls.slice)] = target
            out.append(ls)
        return out, prod, rollback_to

    def evaluate(
        self, reg: Registry, reader: Any, log: Any | None = None
    ) -> list[tuple[LiveState, Decision]]:
        """Judge every watched version; returns (what was seen, what was decided)."""
        now = float(self.clock())
        targets, prod, rollback_to = self.targets(reg, now)
        starts: dict[tuple[str, str, float], list[LiveState]] = defaultdict(list)
        for ls in targets:
            since = ls.since.timestamp()
            if ls.state is State.PROMOTED:
                start = since - max(0.0, now - since)  # an equal span of the previous prod
            elif ls.state is State.CANARY:
                start = self._canary_start(reg, ls)
            else:
                start = since
            starts[(ls.model_id, ls.slice, start)].append(ls)
        out: list[tuple[LiveState, Decision]] = []
        for (model_id, slice_, start), group in starts.items():
            spec = self._spec(reg, model_id)
            # An LLM's windows carry their prompt lengths: the canary check reads them.
            extra: dict[str, Any] = {}
            if spec.model_class is ModelClass.llm:
                extra["with_prompt_tokens"] = True
            if spec.policy.protected_slices:
                extra["by_segment"] = True
            try:
                windows = reader.window(model_id, since_ts=start, slice=slice_, **extra)
            except Exception as exc:  # noqa: BLE001 - one unreadable model must not stop the fleet
                if log is not None:
                    log.warning(f"{model_id}/{slice_}: prediction log unreadable: {exc}")
                continue
            by = {(w.version, w.arm): w for w in windows}
            for ls in group:
                if ls.state is State.PROMOTED:
                    base_v = rollback_to.get((model_id, slice_))
                else:
                    base_v = prod.get((model_id, slice_))
                ev = self._evidence(reg, ls, now, by, base_v, prod.get((model_id, slice_)))
                ev = self._complete(reg, reader, ls, ev, start, by, base_v, log)
                ev, notes = self._monitored(ls, ev)
                try:
                    decision = self.engine.decide(ev)
                except Exception as exc:  # noqa: BLE001 - a bad engine holds, visibly
                    if log is not None:
                        log.error(f"{_key(ls)}: decision engine failed: {exc}")
                    continue
                if notes:
                    decision = decision.model_copy(
                        update={
                            "details": {**decision.details, **notes},
                            "reason": f"{decision.reason} [{'; '.join(notes.values())}]",
                        }
                    )
                out.append((ls, decision))
        return out

    def _monitored(self, ls: LiveState, ev: Evidence) -> tuple[Evidence, dict[str, Any]]:
        """The evidence under the monitoring in force for its (model, slice), and the notes
        saying so; an engine without `under_monitoring` judges with its own thresholds."""
        mon = self.monitoring.get((ls.model_id, ls.slice))
        adjust = getattr(self.engine, "under_monitoring", None)
        if mon is None or adjust is None:
            return ev, {}
        result: tuple[Evidence, dict[str, Any]] = adjust(
            ev,
            heightened_until=_iso(mon.heightened_until),
            relax_factor=mon.relax_factor if mon.decay_until is not None else None,
            decay_until=_iso(mon.decay_until),
            decay_reason=mon.decay_reason,
        )
        return result

    def observations(self, seen: set[str]) -> tuple[list[dg.AssetObservation], set[str]]:
        """One observation on the model's asset per heightened period (the UI shows it);
        returns them and the periods now observed (kept in the cursor). The main sensor
        observes; the heightened-only one does not repeat it."""
        events: list[dg.AssetObservation] = []
        now_seen: set[str] = set()
        if self.heightened_only:
            return events, seen
        for (model_id, slice_), mon in sorted(self.monitoring.items()):
            if mon.heightened_until is None:
                continue
            until = _iso(mon.heightened_until)
            key = f"{model_id}/{slice_}@{until}"
            now_seen.add(key)
            if key in seen:
                continue
            events.append(
                dg.AssetObservation(
                    asset_key=dg.AssetKey(["models", model_id]),
                    metadata={
                        f"monitoring/{slice_}": f"heightened monitoring until {until} "
                        "(break-glass): error-rate and p99 latency limits halved, judged on "
                        "every tick",
                        "break_glass_reason": mon.heightened_reason,
                    },
                )
            )
        return events, now_seen

    def _complete(
        self,
        reg: Registry,
        reader: Any,
        ls: LiveState,
        ev: Evidence,
        start: float,
        by: dict[tuple[int, str], Any],
        base_v: int | None,
        log: Any | None,
    ) -> Evidence:
        """What a state's test needs beyond the windows: a canary's users on each arm since
        its current step began (SRM), an A/B test's recorded plan."""
        since = ls.since.timestamp()
        upd: dict[str, Any] = {}
        if ls.state is State.CANARY:
            upd["window_start_ts"] = start
            step = by
            if start < since:
                try:
                    ws = reader.window(ls.model_id, since_ts=since, slice=ls.slice)
                    step = {(w.version, w.arm): w for w in ws}
                except Exception as exc:  # noqa: BLE001 - no SRM this tick, said so
                    step = {}
                    if log is not None:
                        log.warning(f"{_key(ls)}: step window unreadable: {exc}")
            cand = step.get((ls.version, CANDIDATE_ARMS[ls.state]))
            base = step.get((base_v, PROD_ARM)) if base_v is not None else None
            if cand is not None or base is not None:
                upd["step_users"] = (
                    cand.users if cand is not None else 0,
                    base.users if base is not None else 0,
                )
        elif ls.state is State.AB_TEST:
            upd["ab_plan"] = self._ab_plan(reg, ls)
        return ev.model_copy(update=upd) if upd else ev

    def record_outcomes(
        self,
        reg: Registry,
        decided: list[tuple[LiveState, Decision]],
        alerted: set[str],
        log: Any | None = None,
    ) -> set[str]:
        """Write what the owners must hear about, once per episode: an alert as a registry
        audit entry (kind online_<alert>), and an A/B test's conclusion. Returns the alert
        keys now on record (the sensor keeps them in its cursor; the audit log is the
        authority when the cursor is lost)."""
        on_record: set[str] = set()
        for ls, d in decided:
            if d.conclusion is not None and ls.state is State.AB_TEST:
                ckey = alert_key(ls, f"conclusion:{d.conclusion['outcome']}")
                if ckey in alerted or self._conclude(reg, ls, d, log):
                    on_record.add(ckey)
            if d.alert is None:
                continue
            key = alert_key(ls, d.alert)
            on_record.add(key)
            if key in alerted:
                continue
            kind = ALERT_PREFIX + d.alert
            try:
                if not _alert_on_record(reg, ls.model_id, key):
                    reg.record_alert(
                        ls.model_id,
                        kind=kind,
                        detail=f"{_key(ls)} {ls.state.value}: {d.reason}",
                        payload={
                            "key": key,
                            "slice": ls.slice,
                            "version": ls.version,
                            "state": ls.state.value,
                            "evidence": _jsonable(d.details),
                        },
                        actor=ONLINE_ACTOR,
                    )
                if log is not None:
                    log.warning(f"ALERT {kind}: {_key(ls)}: {d.reason}")
            except Exception as exc:  # noqa: BLE001 - retried next tick; the hold stands
                on_record.discard(key)
                if log is not None:
                    log.error(f"{_key(ls)}: could not record the {kind} alert: {exc}")
        return on_record

    def _conclude(self, reg: Registry, ls: LiveState, d: Decision, log: Any | None) -> bool:
        """Record the A/B test's conclusion (idempotent in the registry); True once it is
        on record, so the cursor spares the next ticks the write."""
        conclude = getattr(reg, "record_ab_conclusion", None)
        if conclude is None or d.conclusion is None:
            return False
        c = d.conclusion
        try:
            conclude(
                ls.model_id,
                ls.version,
                actor=ONLINE_ACTOR,
                outcome=c["outcome"],
                concluded_with_power=bool(c["concluded_with_power"]),
                slice=ls.slice,
                reason=str(c.get("reason", "")),
                evidence=_jsonable(c.get("evidence") or {}),
            )
        except Exception as exc:  # noqa: BLE001 - a conflict or an old entry: said, not fatal
            if log is not None:
                log.warning(f"{_key(ls)}: A/B conclusion not recorded: {exc}")
            return False
        return True

    def _evidence(
        self,
        reg: Registry,
        ls: LiveState,
        now: float,
        by: dict[tuple[int, str], Any],
        base_version: int | None,
        prod_version: int | None,
    ) -> Evidence:
        spec = self._spec(reg, ls.model_id)
        refresh = False
        if (
            spec.tier is Tier.L2
            and ls.state is not State.PROMOTED
            and prod_version is not None
            and prod_version != ls.version
        ):
            refresh = self._contract_ref(reg, ls.model_id, ls.version) == self._contract_ref(
                reg, ls.model_id, prod_version
            )
        return Evidence(
            model_id=ls.model_id,
            slice=ls.slice,
            version=ls.version,
            state=ls.state,
            percent=ls.percent,
            since_ts=ls.since.timestamp(),
            now_ts=now,
            candidate=by.get((ls.version, CANDIDATE_ARMS[ls.state])),
            baseline=by.get((base_version, PROD_ARM)) if base_version is not None else None,
            policy=spec.policy,
            online=self._online.get(ls.model_id) or OnlinePolicy(),
            durations=self.fleet.durations,
            canary_ladder=list(self.fleet.canary_ladder),
            tier=spec.tier,
            is_weight_refresh=refresh,
            irreversible=spec.rollback_class is RollbackClass.IRREVERSIBLE,
        )


def run_request_for(ls: LiveState, decision: Decision) -> dg.RunRequest | None:
    """The job run a non-HOLD decision asks for, with the state it was decided on."""
    if decision.verdict is Verdict.HOLD or decision.next_action is None:
        return None
    req = ActionRequest(
        model_id=ls.model_id,
        slice=ls.slice,
        version=ls.version,
        expected=ls.state.value,
        expected_percent=ls.percent,
        percent=decision.next_percent,
        reason=decision.reason,
        actor=ONLINE_ACTOR,
    )
    fields = action_run_fields(decision.next_action, req)
    if decision.details:
        evidence = json.dumps(_jsonable(decision.details), sort_keys=True)
        fields["tags"] = {**fields["tags"], EVIDENCE_TAG: evidence}
    return dg.RunRequest(**fields)


def heightened_interval_s(fleet: Fleet) -> int:
    """The heightened-monitoring sensor's interval: a third of the fleet's (10 s at 30 s)."""
    return max(1, fleet.durations.sensor_interval_s // 3)


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat(timespec="seconds") if ts is not None else None


def _ts(value: Any) -> float:
    """An audit entry's time (ISO text or datetime) as unix seconds."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).timestamp()
    return float(value.timestamp())


def alert_key(ls: LiveState, alert: str) -> str:
    """One alert per (version, slice, state episode, kind): a hold seen on many ticks, and
    by a sensor whose cursor was lost, alerts once."""
    return f"{_key(ls)}/{ls.state.value}@{ls.since.timestamp():.3f}/{alert}"


def _alert_on_record(reg: Registry, model_id: str, key: str) -> bool:
    return any(
        e.action == "alert" and e.payload.get("key") == key for e in reg.audit_entries(model_id)
    )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """Finite numbers and strings only (the registry refuses NaN in evidence)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            continue
        out[k] = v if isinstance(v, str | int | float | bool) or v is None else str(v)
    return out


def _load_cursor(raw: str | None) -> dict[str, Any]:
    """{"tick": n, "last_decisions": {"model/slice/vN": "VERDICT vN STATE PERCENT"},
    "alerted": [alert keys on record]}; a missing or unreadable cursor starts afresh (it
    dedupes log lines, and alerts, which the audit log then dedupes)."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    tick = data.get("tick")
    last = data.get("last_decisions")
    alerted = data.get("alerted")
    observed = data.get("observed")
    return {
        "observed": [a for a in observed if isinstance(a, str)]
        if isinstance(observed, list)
        else [],
        "tick": tick if isinstance(tick, int) and tick >= 0 else 0,
        "last_decisions": last if isinstance(last, dict) else {},
        "alerted": [a for a in alerted if isinstance(a, str)] if isinstance(alerted, list) else [],
    }


def build_online_metrics_sensor(
    fleet: Fleet,
    engine: DecisionEngine | None = None,
    *,
    jobs: ActionJobs,
    clock: Callable[[], float] = time.time,
    name: str | None = None,
    heightened_only: bool = False,
) -> dg.SensorDefinition:
    """The sensor over the whole fleet; `engine` defaults to `SequentialRule`, `clock` to the
    wall clock (tests pass a later time instead of sleeping). `jobs` maps each action kind to
    its job (`jobs.ACTION_JOBS`); this one launches canary_step, start_ab, promote, rollback.
    `heightened_only`: the shorter-interval sensor for what a break-glass put under
    heightened monitoring (`HEIGHTENED_SENSOR`, every `heightened_interval_s`)."""
    name = name or (HEIGHTENED_SENSOR if heightened_only else ONLINE_METRICS_SENSOR)
    evaluator = OnlineMetricsEvaluator(fleet, engine, clock=clock, heightened_only=heightened_only)
    targets = jobs_for(jobs, _LAUNCHES, name)
    if heightened_only:
        interval = heightened_interval_s(fleet)
        what = (
            "Judges the versions under heightened monitoring after a break-glass (tighter "
            "guardrails) on a shorter interval, and launches their rollback."
        )
    else:
        interval = fleet.durations.sensor_interval_s
        what = (
            "Watches live versions (shadow, canary, A/B, post-promotion) in the prediction "
            "log and launches the next step, a promotion, or a rollback."
        )

    @dg.sensor(
        name=name,
        jobs=targets,
        minimum_interval_seconds=interval,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=what,
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        registry: RegistryResource,
        predlog: PredictionLogResource,
    ) -> dg.SensorResult:
        cursor = _load_cursor(context.cursor)
        last: dict[str, str] = cursor["last_decisions"]
        reg = registry.get()
        decided = evaluator.evaluate(reg, predlog.reader(), context.log)
        # Alerts and A/B conclusions first: a promotion launched below needs its conclusion.
        alerted = evaluator.record_outcomes(reg, decided, set(cursor["alerted"]), context.log)
        observations, observed = evaluator.observations(set(cursor["observed"]))
        requests: list[dg.RunRequest] = []
        seen: dict[str, str] = {}
        holding = 0
        for ls, d in decided:
            summary = _summary(d, ls)
            key = _key(ls)
            seen[key] = summary
            rr = run_request_for(ls, d)
            if rr is None:
                holding += 1
                if last.get(key) != summary:
                    context.log.info(f"{key} {ls.state.value}: HOLD - {d.reason}")
                    if d.details:
                        context.log.info(f"{key} evidence: {json.dumps(d.details)}")
                continue
            context.log.info(
                f"{key} {ls.state.value}{'' if ls.percent is None else f' {ls.percent}%'}: "
                f"{d.verdict.value} -> {d.next_action.value if d.next_action else '-'} "
                f"(run key {rr.run_key}): {d.reason}"
            )
            requests.append(rr)
        new_cursor = json.dumps(
            {
                "tick": cursor["tick"] + 1,
                "last_decisions": dict(sorted(seen.items())[:_MAX_CURSOR_ENTRIES]),
                "alerted": sorted(alerted)[:_MAX_ALERT_KEYS],
                "observed": sorted(observed)[:_MAX_ALERT_KEYS],
            },
            sort_keys=True,
        )
        if requests or observations:
            return dg.SensorResult(
                run_requests=requests, cursor=new_cursor, asset_events=observations
            )
        return dg.SensorResult(
            skip_reason=f"{len(decided)} live version(s) watched, {holding} holding, "
            "nothing to launch",
            cursor=new_cursor,
        )

    return _sensor
