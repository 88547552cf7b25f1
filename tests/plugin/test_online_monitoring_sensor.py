"""The sensor's wiring of heightened monitoring: one observation on the model's asset per
heightened period (the UI shows it), kept in the cursor so later ticks do not repeat it, and
the heightened note in the HOLD's evidence."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_online_metrics_sensor import MODEL, canary, sensor, tick, traffic  # noqa: F401

import sensors.online_metrics as om
from jobs import ACTION_JOBS
from modelops.fleet import Fleet
from modelops.registry import Registry
from modelops.registry.monitoring import Monitoring
from resources import PredictionLogResource


def test_a_heightened_period_is_observed_once_on_the_model_asset(
    canary: Registry,  # noqa: F811
    demo_fleet: Fleet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    until = datetime.now(UTC) + timedelta(hours=24)
    calls: list[Any] = []

    def in_force(reg: Registry, at: datetime) -> dict[tuple[str, str], Monitoring]:
        calls.append(at)
        return {(MODEL, "global"): Monitoring(heightened_until=until, heightened_reason="down")}

    monkeypatch.setattr(om, "monitoring_in_force", in_force)
    traffic(1, "prod", 300, 0.2, per_user=1)
    s = sensor(demo_fleet)
    first = tick(s)
    assert len(calls) == 1  # one read per tick, for the whole fleet
    [obs] = first.asset_events
    assert obs.asset_key.path == ["models", MODEL]
    text = obs.metadata["monitoring/global"].value
    assert text.startswith(f"heightened monitoring until {until.isoformat(timespec='seconds')}")
    assert "(break-glass)" in text
    cursor = json.loads(first.cursor)
    assert cursor["observed"] == [f"{MODEL}/global@{until.isoformat(timespec='seconds')}"]
    second = tick(s, first.cursor)
    assert second.asset_events == []


class Spy:
    """The registry, counting fleet-wide scans."""

    def __init__(self, reg: Registry) -> None:
        self.reg, self.scans = reg, 0

    def live_states(self, *a: Any) -> Any:
        self.scans += 1
        return self.reg.live_states(*a)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reg, name)


def test_the_heightened_sensor_judges_only_what_is_heightened(
    canary: Registry,  # noqa: F811
    demo_fleet: Fleet,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hot: dict[tuple[str, str], Monitoring] = {}
    monkeypatch.setattr(om, "monitoring_in_force", lambda reg, at: hot)
    traffic(1, "prod", 300, 0.2, per_user=1)
    traffic(2, "canary", 60, 0.2, error_rate=0.5, seed=2)
    ev = om.OnlineMetricsEvaluator(demo_fleet, clock=time_ahead, heightened_only=True)
    spy = Spy(canary)
    reader = PredictionLogResource().reader()
    assert ev.evaluate(spy, reader) == [] and spy.scans == 0  # nothing heightened: one read
    until = datetime.now(UTC) + timedelta(hours=24)
    hot[(MODEL, "global")] = Monitoring(heightened_until=until, heightened_reason="down")
    [(ls, d)] = ev.evaluate(spy, reader)
    assert (ls.version, d.verdict.value, spy.scans) == (2, "ROLLBACK", 1)
    assert "heightened monitoring until" in d.reason
    assert ev.observations(set()) == ([], set())  # the main sensor observes, not this one
    s = om.build_online_metrics_sensor(
        demo_fleet, jobs=ACTION_JOBS, clock=time_ahead, heightened_only=True
    )
    assert s.name == om.HEIGHTENED_SENSOR
    [rr] = tick(s).run_requests
    assert rr.job_name == "modelops_rollback" and "(break-glass)" in rr.tags[om.EVIDENCE_TAG]


def time_ahead() -> float:
    return time.time() + 60
