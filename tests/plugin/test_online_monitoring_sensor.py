"""The sensor's wiring of heightened monitoring: one observation on the model's asset per
heightened period (the UI shows it), kept in the cursor so later ticks do not repeat it, and
the heightened note in the HOLD's evidence."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_online_metrics_sensor import MODEL, canary, sensor, tick, traffic  # noqa: F401

import sensors.online_metrics as om
from modelops.fleet import Fleet
from modelops.registry import Registry
from modelops.registry.monitoring import Monitoring


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
