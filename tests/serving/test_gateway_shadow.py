"""Shadow traffic is mirrored out of band and never harms the user's request.

The hung shadow backend is a real socket that accepts connections and never answers, so a
mirror sent to it waits on its own timeout; the assertions are that users never wait with
it, that the bounded queue fills and drops (counted), and that answers from a working
shadow are logged with arm "shadow" under the user's request id.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from gateway_fixtures import (  # noqa: F401 - gw_models is a fixture
    HungServer,
    MemorySink,
    gw_models,
    infer_body,
    make_app,
    metric,
    output,
    running,
    table,
    until,
)

from serving.routing import BackendKind, BreakerPolicy, Endpoint
from serving.triton.server import free_port

HUNG_TIMEOUT = BreakerPolicy(timeout_s=30.0, min_requests=1000)  # mirrors wait 30 s


def _hung(url: str) -> Endpoint:
    return Endpoint(version=7, backend=BackendKind.triton, url=url, backend_model="hung")


@pytest.mark.timeout(60)
def test_shadow_answers_are_logged_with_arm_shadow(gw_models) -> None:  # noqa: F811
    sink = MemorySink()
    t = table("mirrored", gw_models.endpoint(1), shadow=(gw_models.endpoint(2), 100.0))

    async def scenario() -> None:
        app = make_app(sink=sink, tables=[t])
        async with running(app) as c:
            for i in range(5):
                r = await c.post(
                    "/v2/models/mirrored/infer",
                    json=infer_body([float(i)]),
                    headers={"x-request-id": f"m{i}"},
                )
                assert r.status_code == 200 and output(r, "VERSION") == [1.0]
            await until(lambda: len(sink.by_arm("shadow")) == 5, 10, "shadow records")
            text = (await c.get("/metrics")).text
        assert (
            metric(
                text,
                "modelops_gateway_shadow_mirrored_total",
                arm="shadow",
                model="mirrored",
                version="2",
            )
            == 5.0
        )

    asyncio.run(scenario())
    shadows = {r.request_id: r for r in sink.by_arm("shadow")}
    prods = {r.request_id: r for r in sink.by_arm("prod")}
    assert set(shadows) == set(prods) == {f"m{i}" for i in range(5)}
    for rid, rec in shadows.items():
        assert rec.version == 2 and rec.error is None and rec.model_id == "mirrored"
        outs = {o["name"]: o["data"] for o in rec.outputs["outputs"]}  # type: ignore[index]
        assert outs["VERSION"] == [2.0]
        assert outs["OUTPUT0"] == [2.0 * int(rid[1:])]


@pytest.mark.timeout(120)
def test_hung_shadow_backend_never_delays_or_fails_users(gw_models) -> None:  # noqa: F811
    n = 150
    body = infer_body([1.0, 2.0])

    async def latencies(app) -> list[float]:  # type: ignore[no-untyped-def]
        out = []
        async with running(app) as c:
            for _ in range(20):  # warm the connection pool
                await c.post("/v2/models/hungshadow/infer", json=body)
            for i in range(n):
                t0 = time.perf_counter()
                r = await c.post(
                    "/v2/models/hungshadow/infer", json=body, headers={"x-user-id": f"u{i}"}
                )
                out.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text
                assert output(r) == [2.0, 4.0]
            gw = app.state.gateway
            if gw.store.lookup("hungshadow", "global").shadow is not None:
                # both workers are stuck on the hung backend, the queue is full, the rest drop
                await until(lambda: gw.mirror.in_flight == 2, 5, "workers in flight")
                assert gw.mirror.mirrored == 2 + 8
                assert gw.mirror.dropped == n + 20 - 10
        return out

    with HungServer() as hung:
        plain = table("hungshadow", gw_models.endpoint(1))
        mirrored = table(
            "hungshadow",
            gw_models.endpoint(1),
            shadow=(_hung(hung.url), 100.0),
            breaker=HUNG_TIMEOUT,
        )
        config = {"shadow_workers": 2, "shadow_queue_size": 8}
        base = asyncio.run(latencies(make_app(tables=[plain], **config)))
        with_shadow = asyncio.run(latencies(make_app(tables=[mirrored], **config)))
        assert hung.accepted == 2  # the mirrors really were sent, and are still waiting
    p50_base, p50_shadow = statistics.median(base), statistics.median(with_shadow)
    # Nobody waited on the hung backend (its mirrors wait 30 s) ...
    assert max(with_shadow) < 1.0
    # ... and the typical request is no slower beyond noise on a shared 2-core machine.
    assert p50_shadow < p50_base * 1.5 + 0.002, (p50_base, p50_shadow)


@pytest.mark.timeout(60)
def test_full_shadow_queue_drops_counts_and_reports(gw_models) -> None:  # noqa: F811
    sink = MemorySink()

    async def scenario(url: str) -> None:
        t = table(
            "dropping", gw_models.endpoint(1), shadow=(_hung(url), 100.0), breaker=HUNG_TIMEOUT
        )
        app = make_app(
            sink=sink, tables=[t], shadow_workers=1, shadow_queue_size=2, event_interval_s=0.2
        )
        gw = app.state.gateway
        async with running(app) as c:

            async def call() -> None:
                r = await c.post("/v2/models/dropping/infer", json=infer_body([1.0]))
                assert r.status_code == 200

            await call()
            await until(lambda: gw.mirror.in_flight == 1, 5, "the worker to take the mirror")
            for _ in range(19):
                await call()
            assert gw.mirror.mirrored == 3  # one in flight, two queued
            assert gw.mirror.dropped == 17
            text = (await c.get("/metrics")).text
            assert (
                metric(
                    text,
                    "modelops_gateway_shadow_dropped_total",
                    arm="shadow",
                    model="dropping",
                    reason="queue_full",
                    version="7",
                )
                == 17.0
            )
            await until(lambda: sink.events_of("shadow_dropped"), 5, "a drop event")
            first = sink.events_of("shadow_dropped")
            assert len(first) == 1 and first[0].version == 7 and first[0].detail["count"] == 1
            # rate-limited: the next event comes after the interval and carries the count
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while len(sink.events_of("shadow_dropped")) < 2:
                assert loop.time() < deadline
                await call()
                await asyncio.sleep(0.02)
            second = sink.events_of("shadow_dropped")[1]
            assert second.detail["count"] >= 16

    with HungServer() as hung:
        asyncio.run(scenario(hung.url))


@pytest.mark.timeout(60)
def test_failing_shadow_trips_its_breaker_and_stops_being_mirrored(gw_models) -> None:  # noqa: F811
    sink = MemorySink()
    dead = Endpoint(
        version=8,
        backend=BackendKind.triton,
        url=f"http://127.0.0.1:{free_port()}",
        backend_model="gone",
    )
    policy = BreakerPolicy(window_s=60, min_requests=4, max_error_rate=0.5, timeout_s=2)
    t = table("badshadow", gw_models.endpoint(1), shadow=(dead, 100.0), breaker=policy)

    async def scenario() -> None:
        app = make_app(sink=sink, tables=[t])
        gw = app.state.gateway
        async with running(app) as c:
            for _ in range(4):
                r = await c.post("/v2/models/badshadow/infer", json=infer_body([1.0]))
                assert r.status_code == 200
            await until(lambda: sink.events_of("breaker_open"), 10, "breaker event")
            mirrored = gw.mirror.mirrored
            for _ in range(5):
                r = await c.post("/v2/models/badshadow/infer", json=infer_body([1.0]))
                assert r.status_code == 200
            assert gw.mirror.mirrored == mirrored  # no more mirrors
            text = (await c.get("/metrics")).text
            assert (
                metric(
                    text,
                    "modelops_gateway_shadow_dropped_total",
                    arm="shadow",
                    model="badshadow",
                    reason="breaker",
                    version="8",
                )
                == 5.0
            )
        ev = sink.events_of("breaker_open")[0]
        assert ev.version == 8 and ev.detail["arm"] == "shadow"
        errs = [r.error for r in sink.by_arm("shadow")]
        assert errs and all(e == "unreachable" for e in errs)

    asyncio.run(scenario())
