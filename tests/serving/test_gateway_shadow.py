"""Shadow traffic is mirrored out of band and never harms the user's request.

The hung shadow backend is a real socket that accepts connections and never answers, so a
mirror sent to it waits on its own timeout; the assertions are that users never wait with
it, that the bounded queue fills and drops (counted), and that answers from a working
shadow are logged with arm "shadow" under the user's request id. Where the proof is that
users never wait on a mirror, the backend instead holds each mirror until the test releases
it, and every user answer must arrive before that.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class HeldBackend:
    """A real HTTP backend that reads each request and holds it unanswered until `release`.

    While `answered` is 0 (it counts before any byte of an answer goes out), every mirror it
    `received` is provably still waiting on it: a user answer that arrives then cannot have
    waited for a mirror's answer.
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received = 0
        self.answered = 0
        self._lock = threading.Lock()
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with backend._lock:
                    backend.received += 1
                backend.release.wait()  # set by the test, and always on exit
                with backend._lock:  # counted before a byte goes out: 0 means none has
                    backend.answered += 1
                payload = json.dumps(
                    {
                        "model_name": "hung",
                        "outputs": [
                            {"name": "OUTPUT0", "shape": [2], "datatype": "FP32", "data": [0, 0]}
                        ],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HeldBackend:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.mark.timeout(120)
def test_hung_shadow_backend_never_delays_or_fails_users(gw_models) -> None:  # noqa: F811
    """Users are answered, correctly, while the shadow backend holds every mirror unanswered.

    Two workers and a queue of 8: the first two mirrors are held by the backend, the next 8
    wait in the queue, and the rest are dropped and counted. The mirrors' own timeout is
    longer than the test, so only the backend's hold keeps them waiting. At every user
    answer the mirror is in exactly the state that answer's arrival order implies, with no
    mirror finished (answered, failed or timed out): no user waited on a mirror.
    """
    n = 150
    body = infer_body([1.0, 2.0])
    sink = MemorySink()
    never = BreakerPolicy(timeout_s=3600.0, min_requests=1000)
    # At each answer: backend (received, answered, released), mirror (in flight, queued,
    # mirrored, dropped).
    seen: list[tuple[tuple[int, int, bool], tuple[int, int, int, int]]] = []

    async def scenario(held: HeldBackend) -> None:
        t = table(
            "hungshadow", gw_models.endpoint(1), shadow=(_hung(held.url), 100.0), breaker=never
        )
        app = make_app(sink=sink, tables=[t], shadow_workers=2, shadow_queue_size=8)
        gw = app.state.gateway
        mirror = gw.mirror
        async with running(app) as c:

            async def call(i: int) -> None:
                r = await c.post(
                    "/v2/models/hungshadow/infer",
                    json=body,
                    headers={"x-user-id": f"u{i}", "x-request-id": f"r{i}"},
                )
                seen.append(
                    (
                        (held.received, held.answered, held.release.is_set()),
                        (mirror.in_flight, mirror.queue_depth(), mirror.mirrored, mirror.dropped),
                    )
                )
                assert r.status_code == 200, r.text
                assert output(r) == [2.0, 4.0]

            # Each worker takes one mirror and the backend holds it.
            await call(0)
            await until(lambda: held.received == 1, 30, "the first mirror to be held")
            await call(1)
            await until(lambda: held.received == 2, 30, "the second mirror to be held")
            for i in range(2, n):
                await call(i)
            # Every user was answered while the backend held mirrors and had answered none.
            assert len(seen) == n
            assert all(backend[1:] == (0, False) for backend, _ in seen)
            # From the third answer on: both workers stuck on the two held mirrors, the queue
            # filling to 8, then every further mirror dropped and counted at once.
            for i, ((received, _, _), state) in enumerate(seen[2:], start=2):
                accepted = min(i + 1, 10)
                assert received == 2 and state == (2, accepted - 2, accepted, i + 1 - accepted)
            text = (await c.get("/metrics")).text
            labels = {"arm": "shadow", "model": "hungshadow", "version": "7"}
            assert metric(text, "modelops_gateway_shadow_mirrored_total", **labels) == 10.0
            assert metric(
                text, "modelops_gateway_shadow_dropped_total", reason="queue_full", **labels
            ) == float(n - 10)
            assert sink.by_arm("shadow") == []  # no mirror finished while users were served
            # Released, the held and the queued mirrors complete: exactly the 10 accepted.
            held.release.set()
            await until(lambda: len(sink.by_arm("shadow")) == 10, 30, "the mirrors to finish")
            assert held.answered == 10 and mirror.in_flight == 0 and mirror.queue_depth() == 0

        prods = sink.by_arm("prod")
        assert len(prods) == n and all(r.error is None for r in prods)
        shadows = sink.by_arm("shadow")
        assert {r.request_id for r in shadows} == {f"r{i}" for i in range(10)}
        assert all(r.version == 7 and r.error is None for r in shadows)

    with HeldBackend() as held:
        asyncio.run(scenario(held))


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
