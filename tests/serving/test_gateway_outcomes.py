"""Outcomes: authenticated, only for requests this gateway served, once per (request, name).

The poisoning test is the attack as it was reproduced: one real canary request, then 1,500
`click=0` outcomes posted against its request id. The prediction log behind the gateway is
the real one (SQLite), and the window the sensors read must count exactly one outcome.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from gateway_fixtures import (  # noqa: F401 - gw_models is a fixture
    TOKEN,
    MemorySink,
    gw_models,
    infer_body,
    make_app,
    running,
    snapshot,
    table,
    until,
)

from serving.gateway import GatewayConfig, create_app
from serving.gateway.recorder import ServedIds
from serving.predlog import PredictionLog, PredictionLogReader


@pytest.mark.timeout(120)
def test_1500_replayed_outcomes_count_once_in_the_canary_window(
    gw_models,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'predictions.db'}"
    t = table("ctr", gw_models.endpoint(1), canary=(gw_models.endpoint(2), 100.0))
    log = PredictionLog(url)

    async def scenario() -> None:
        app = make_app(sink=log, tables=[t])
        async with running(app) as c:
            r = await c.post(
                "/v2/models/ctr/infer",
                json=infer_body([1.0]),
                headers={"x-user-id": "u1", "x-request-id": "the-one"},
            )
            assert r.status_code == 200 and r.headers["x-modelops-arm"] == "canary"
            statuses = []
            for _ in range(1_500):
                o = await c.post(
                    "/v1/outcomes", json={"request_id": "the-one", "name": "click", "value": 0}
                )
                statuses.append(o.status_code)
            assert statuses[0] == 202 and set(statuses[1:]) == {409}
            assert "already accepted" in o.json()["error"]
            # an id this gateway never served, and no token at all
            o = await c.post("/v1/outcomes", json={"request_id": "made-up", "value": 0})
            assert o.status_code == 404 and "not served" in o.json()["error"]
        async with running(app, token=None) as c:
            o = await c.post("/v1/outcomes", json={"request_id": "the-one", "value": 0})
            assert o.status_code == 401
        # another gateway process (or this one restarted) has not served the request
        async with running(make_app(sink=log, tables=[t])) as c:
            o = await c.post(
                "/v1/outcomes", json={"request_id": "the-one", "name": "click", "value": 0}
            )
            assert o.status_code == 404

    try:
        asyncio.run(scenario())
        assert log.flush(30)
    finally:
        log.close()
    with PredictionLogReader(url) as reader:
        by_arm = {w.arm: w for w in reader.window("ctr", since_ts=0)}
    canary = by_arm["canary"]
    assert canary.requests == 1
    assert canary.outcomes["click"].model_dump() == {"count": 1, "mean": 0.0}
    assert set(canary.outcomes) == {"click"}


@pytest.mark.timeout(60)
def test_outcomes_are_accepted_for_a_bounded_number_and_age_of_served_ids(
    gw_models,  # noqa: F811
) -> None:
    now = {"t": 1_000.0}
    sink = MemorySink()
    app = create_app(
        GatewayConfig(token=TOKEN, outcome_max_ids=3, outcome_window_s=60.0),
        sink=sink,
        schema_source=None,
        contracts=None,
        clock=lambda: now["t"],
    )
    app.state.gateway.store.apply(snapshot(table("m", gw_models.endpoint(1))))

    async def scenario() -> None:
        async with running(app) as c:

            async def serve(rid: str) -> None:
                r = await c.post(
                    "/v2/models/m/infer", json=infer_body([1.0]), headers={"x-request-id": rid}
                )
                assert r.status_code == 200

            async def outcome(rid: str, name: str = "click") -> int:
                r = await c.post("/v1/outcomes", json={"request_id": rid, "name": name, "value": 1})
                return r.status_code

            for rid in ("a", "b", "c", "d"):  # the bound is 3 ids: "a" is forgotten
                await serve(rid)
            assert await outcome("a") == 404
            assert [await outcome(r) for r in ("b", "c", "d")] == [202, 202, 202]
            assert await outcome("b", "label") == 202  # another name is another outcome
            assert await outcome("b") == 409
            # a refused request is no prediction: an outcome cannot name it
            r = await c.post(
                "/v2/models/m/infer", json={"inputs": []}, headers={"x-request-id": "refused"}
            )
            assert r.status_code == 400
            assert await outcome("refused") == 404
            now["t"] += 61  # past the window: every id is too old
            assert await outcome("d", "label") == 404
            await serve("e")
            assert len(app.state.gateway.served) == 1  # the old ones were dropped, not kept
            assert await outcome("e") == 202
            await until(lambda: len(sink.outcomes) == 5, 5, "accepted outcomes reach the log")

    asyncio.run(scenario())
    assert [(o.request_id, o.name) for o in sink.outcomes] == [
        ("b", "click"),
        ("c", "click"),
        ("d", "click"),
        ("b", "label"),
        ("e", "click"),
    ]


def test_served_ids_keep_outcome_names_when_an_id_is_served_again() -> None:
    ids = ServedIds(max_ids=10, window_s=100.0)
    ids.add("r", 1.0)
    assert ids.claim("r", "click", 2.0) is None
    ids.add("r", 3.0)  # the client reused its request id
    assert ids.claim("r", "click", 4.0) == "duplicate"
    ids.unclaim("r", "click")
    assert ids.claim("r", "click", 4.0) is None
    assert ids.claim("r", "click", 200.0) == "unknown"
