"""The online-metrics sensor under monitoring in force: heightened after a break-glass
(error-rate and p99 limits halved, judged past the watch), relaxed inside an IRREVERSIBLE
rollback's decay window, read for the whole fleet in one query per tick."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from test_governance_breakglass import M, glass, prod  # noqa: F401 - the fixture
from test_registry_kit import version
from test_rollback_irreversible import E, Fleet

from modelops.evaluation.decision import Evidence, Verdict
from modelops.evaluation.sequential_rule import SequentialRule
from modelops.evidence import WindowStats
from modelops.fleet import Fleet as FleetDecl
from modelops.fleet import OnlinePolicy, PolicyDurations
from modelops.registry import Registry
from modelops.registry.monitoring import monitoring_in_force
from modelops.rollback import enter_with_snapshots, run_rollback
from modelops.spec import DecisionPolicy, State, Tier
from sensors.online_metrics import EVIDENCE_TAG, OnlineMetricsEvaluator, run_request_for

S = State


def window(model_id: str, version: int, arm: str, error_rate: float, n: int = 1000) -> WindowStats:
    errors = round(n * error_rate)
    return WindowStats(
        model_id=model_id, version=version, arm=arm, slice="global", since_ts=0.0,
        until_ts=None, first_ts=1.0, last_ts=2.0, requests=n, errors=errors,
        error_rate=errors / n, timeouts=0, timeout_rate=0.0, latency_mean_ms=5.0,
        latency_p50_ms=4.0, latency_p99_ms=20.0, latency_max_ms=40.0, users=0,
    )  # fmt: skip


class Reader:
    """A prediction log that returns the same windows at every read."""

    def __init__(self, *windows: WindowStats) -> None:
        self.windows = list(windows)

    def window(self, model_id: str, **_: Any) -> list[WindowStats]:
        return [w for w in self.windows if w.model_id == model_id]


def evaluator(clock: Any, watch_s: float = 48 * 3600.0) -> OnlineMetricsEvaluator:
    fleet = FleetDecl.model_construct(
        datasets=[], models=[], durations=PolicyDurations(watch_s=watch_s),
        canary_ladder=[1, 5, 10],
    )  # fmt: skip
    return OnlineMetricsEvaluator(fleet, clock=lambda: clock.now.timestamp())


def test_under_monitoring_halves_errors_and_latency_and_keeps_the_margin() -> None:
    rule = SequentialRule()
    e = Evidence(
        model_id="m", slice="global", version=2, state=S.PROMOTED, since_ts=0.0, now_ts=1.0,
        policy=DecisionPolicy(primary_metric="click"), online=OnlinePolicy(), tier=Tier.L1,
    )  # fmt: skip
    hot, notes = rule.under_monitoring(e, heightened_until="2026-01-02T00:00:00+00:00")
    assert (hot.online.max_error_rate, hot.online.max_latency_p99_ms) == (0.025, 125.0)
    assert hot.online.max_latency_ratio == e.online.max_latency_ratio
    assert rule.canary_policy(hot).harm_margin == rule.canary_policy(e).harm_margin
    assert (
        "heightened monitoring until 2026-01-02T00:00:00+00:00 (break-glass)" in notes["monitoring"]
    )
    cool, notes = rule.under_monitoring(e, relax_factor=2.0, decay_until="T", decay_reason="why")
    assert (cool.online.max_error_rate, cool.online.max_latency_p99_ms) == (0.1, 500.0)
    assert rule.canary_policy(cool).harm_margin == pytest.approx(
        2 * rule.canary_policy(e).harm_margin
    )
    assert "decay window until T" in notes["decay_window"] and "why" in notes["decay_window"]
    assert rule.under_monitoring(e) == (e, {})


def test_heightened_monitoring_after_a_break_glass(
    prod: Registry,  # noqa: F811
    clock: Any,
) -> None:
    res = glass(prod, 2)  # v2 PROMOTED straight from OFFLINE_PASSED, v1 its rollback target
    until = res.heightened_until
    [(key, mon)] = monitoring_in_force(prod, clock.now).items()
    assert key == (M, "global") and mon.heightened_until == until
    # 4% errors: inside the normal 5% limit, over the halved 2.5%.
    reader = Reader(window(M, 2, "prod", 0.04), window(M, 1, "prod", 0.0))
    ev = evaluator(clock, watch_s=3600.0)
    clock.advance(hours=2)  # past the one-hour watch: judged anyway while heightened
    [(ls, d)] = ev.evaluate(prod, reader)
    assert (ls.version, d.verdict) == (2, Verdict.ROLLBACK)
    assert "exceeds 2.5%" in d.reason and "heightened monitoring until" in d.reason
    rr = run_request_for(ls, d)
    assert rr is not None and "(break-glass)" in rr.tags[EVIDENCE_TAG]
    [obs], seen = ev.observations(set())
    assert obs.asset_key.path == ["models", M]
    assert "heightened monitoring until" in obs.metadata["monitoring/global"].value
    assert ev.observations(seen)[0] == []  # once per heightened period
    # Heightened monitoring over: past the watch, the version is no longer judged.
    clock.advance(hours=23)
    assert ev.evaluate(prod, reader) == []
    assert ev.observations(seen)[0] == []
    # Within a normal watch, 4% errors are under the 5% limit.
    [(_, d)] = evaluator(clock, watch_s=48 * 3600.0).evaluate(prod, reader)
    assert d.verdict is Verdict.HOLD and "monitoring" not in d.details


@pytest.fixture
def decayed(registry: Registry, tmp_path: Any) -> tuple[Registry, int, int]:
    """E rolled back (IRREVERSIBLE: a decay window), then a new version at CANARY 1%."""
    f = Fleet(registry, tmp_path)
    run_rollback(registry, f.artifacts, E, f.v2, actor="ops")
    v3 = version(registry, E).version
    for st in (S.APPROVED_SHADOW, S.SHADOW, S.APPROVED_CANARY):
        registry.transition(E, v3, st, actor="ops")
    enter_with_snapshots(registry, f.artifacts, E, v3, S.CANARY, actor="ops", percent=1)
    return registry, f.v1, v3


def test_the_decay_window_relaxes_the_thresholds(
    decayed: tuple[Registry, int, int], clock: Any
) -> None:
    reg, v1, v3 = decayed
    assert reg.decay_window(E) is not None
    # 7% errors: over the normal 5% limit, inside the window's relaxed 10%.
    reader = Reader(window(E, v3, "canary", 0.07), window(E, v1, "prod", 0.0))
    [(_, inside)] = evaluator(clock).evaluate(reg, reader)
    assert inside.verdict is not Verdict.ROLLBACK
    assert "decay window until" in inside.details["decay_window"]
    assert "IRREVERSIBLE" in inside.details["decay_window"]
    clock.advance(days=15)  # the 14-day window is over: the same drop rolls back
    assert reg.decay_window(E) is None
    [(_, outside)] = evaluator(clock).evaluate(reg, reader)
    assert outside.verdict is Verdict.ROLLBACK and "exceeds 5.0%" in outside.reason
    assert "decay_window" not in outside.details
    assert monitoring_in_force(reg, clock.now + timedelta(seconds=1)) == {}
