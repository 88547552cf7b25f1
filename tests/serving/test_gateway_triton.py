"""The gateway in front of the real Triton: protocol fidelity, logging, replay, breakers.

`tritonclient.http` is used unmodified against a gateway served by uvicorn on a real
socket, and its answers are compared with the same client talking to Triton directly.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from gateway_fixtures import (  # noqa: F401 - gw_models is a fixture
    MemorySink,
    ServerThread,
    gw_models,
    infer_body,
    json_server,
    make_app,
    metric,
    output,
    running,
    snapshot,
    table,
    until,
    wait_until,
)

from serving.gateway.shadow import replay
from serving.routing import BackendKind, BreakerPolicy, Endpoint


def _client(url: str):  # type: ignore[no-untyped-def]
    import tritonclient.http as th

    return th.InferenceServerClient(url)


def _infer(client, model: str, x: np.ndarray, *, binary: bool, **kw):  # type: ignore[no-untyped-def]
    import tritonclient.http as th

    inp = th.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outs = [
        th.InferRequestedOutput("OUTPUT0", binary_data=binary),
        th.InferRequestedOutput("VERSION", binary_data=binary),
    ]
    return client.infer(model, [inp], outputs=outs, **kw)


@pytest.mark.timeout(120)
def test_tritonclient_gets_the_same_answers_through_the_gateway(gw_models) -> None:  # noqa: F811
    sink = MemorySink()
    app = make_app(sink=sink, tables=[table("doubler", gw_models.endpoint(1))])
    direct = _client(gw_models.triton.url)
    x = np.array([0.5, -1.25, 3.0, 1e6], dtype=np.float32)
    with ServerThread(app) as server:
        via = _client(server.url)
        assert via.is_server_live() and via.is_server_ready()
        assert via.is_model_ready("doubler")
        assert not via.is_model_ready("no-such-model")
        meta = via.get_model_metadata("doubler")
        want = direct.get_model_metadata(gw_models.v1)
        assert meta["name"] == "doubler" and meta["versions"] == ["1"]
        assert meta["inputs"] == want["inputs"] and meta["outputs"] == want["outputs"]
        assert via.get_model_config("doubler")["name"] == "doubler"
        for binary in (True, False):
            a = _infer(via, "doubler", x, binary=binary)
            b = _infer(direct, gw_models.v1, x, binary=binary)
            np.testing.assert_array_equal(a.as_numpy("OUTPUT0"), b.as_numpy("OUTPUT0"))
            np.testing.assert_array_equal(a.as_numpy("OUTPUT0"), x * 2)
            assert a.as_numpy("VERSION").tolist() == [1.0]
        # default outputs (binary_data_output), compressed request, compressed answer asked
        import tritonclient.http as th

        inp = th.InferInput("INPUT0", [4], "FP32")
        inp.set_data_from_numpy(x)
        for kw in (
            {},
            {"request_compression_algorithm": "gzip"},
            {"response_compression_algorithm": "deflate"},
        ):
            r = via.infer("doubler", [inp], **kw)
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), x * 2)
        # every response names what served it
        r = httpx.post(
            f"{server.http_url}/v2/models/doubler/infer",
            json=infer_body([1.0]),
            headers={"x-request-id": "req-42"},
        )
        assert r.headers["x-modelops-version"] == "1"
        assert r.headers["x-modelops-arm"] == "prod"
        assert r.headers["x-request-id"] == "req-42"
        via.close()
    records = wait_until(lambda: len(sink.records) >= 6 and sink.records, 10, "records")
    by_id = {r.request_id: r for r in records}
    rec = by_id["req-42"]
    assert (rec.model_id, rec.version, rec.arm, rec.slice) == ("doubler", 1, "prod", "global")
    assert rec.error is None and rec.latency_ms > 0 and rec.inputs is None
    assert rec.outputs is not None and rec.outputs["outputs"][0]["data"] == [2.0]
    binary_rec = records[0]  # the first tritonclient infer: binary outputs
    assert binary_rec.outputs is not None
    assert "data" not in binary_rec.outputs["outputs"][0]  # header JSON only
    assert binary_rec.outputs["outputs"][0]["parameters"]["binary_data_size"] == 16


@pytest.mark.timeout(120)
def test_answers_name_the_model_and_registry_version_not_the_backends(gw_models) -> None:  # noqa: F811
    """A stock tritonclient asking for `ctr` got `model_name: "gw_double_v2"` and
    `model_version: "1"` (Triton's names). It must get `ctr` and the registry version that
    served it, matching x-modelops-version, and `/versions/{v}/infer` must reach version v."""
    from tritonclient.utils import InferenceServerException

    sink = MemorySink()
    t = table("ctr", gw_models.endpoint(2), canary=(gw_models.endpoint(3), 100.0))
    x = np.array([1.0, -2.0], dtype=np.float32)
    with ServerThread(make_app(sink=sink, tables=[t])) as server:
        client = _client(server.url)
        for binary in (True, False):
            r = _infer(client, "ctr", x, binary=binary)
            got = r.get_response()
            assert (got["model_name"], got["model_version"]) == ("ctr", "2"), got
            np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), x * 2)
            r = _infer(
                client, "ctr", x, binary=binary, headers={"x-user-id": "u1"}, request_id="i7"
            )
            got = r.get_response()
            assert (got["model_name"], got["model_version"], got["id"]) == ("ctr", "3", "i7")
            assert r.as_numpy("VERSION").tolist() == [3.0]
            # a named version, whoever asks
            for v in ("2", "3"):
                r = _infer(client, "ctr", x, binary=binary, model_version=v)
                assert r.get_response()["model_version"] == v
                assert r.as_numpy("VERSION").tolist() == [float(v)]
                np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), x * 2)
        for v, status in (("9", "404"), ("1", "404"), ("x", "400")):
            with pytest.raises(InferenceServerException) as err:
                _infer(client, "ctr", x, binary=True, model_version=v)
            assert err.value.status() == status, (v, err.value)
            if status == "404":
                assert "loaded versions: 2, 3" in str(err.value)
        meta = client.get_model_metadata("ctr", model_version="3")
        assert meta["name"] == "ctr" and meta["versions"] == ["3"]
        assert client.is_model_ready("ctr", "3") and not client.is_model_ready("ctr", "9")
        client.close()
        # the header and the body agree, JSON and binary alike
        for body in (
            infer_body([1.0]),
            {**infer_body([1.0]), "parameters": {"binary_data_output": True}},
        ):
            r = httpx.post(f"{server.http_url}/v2/models/ctr/infer", json=body)
            hlen = r.headers.get("inference-header-content-length")
            head = json.loads(r.content[: int(hlen)] if hlen else r.content)
            assert r.headers["x-modelops-version"] == head["model_version"] == "2"
            assert head["model_name"] == "ctr"
            r = httpx.post(f"{server.http_url}/v2/models/ctr/versions/3/infer", json=body)
            assert r.status_code == 200 and r.headers["x-modelops-arm"] == "pinned"
            hlen = r.headers.get("inference-header-content-length")
            head = json.loads(r.content[: int(hlen)] if hlen else r.content)
            assert r.headers["x-modelops-version"] == head["model_version"] == "3"
    pinned = wait_until(lambda: sink.by_arm("pinned"), 10, "pinned records")
    assert {(p.model_id, p.version) for p in pinned} == {("ctr", 2), ("ctr", 3)}
    assert all(o["name"] for p in sink.records if p.outputs for o in p.outputs["outputs"])


def test_rename_splices_only_the_names() -> None:
    from serving.gateway.kserve import rename_response

    tricky = {"id": 'x"model_name":"spoof', "model_name": "m__v2", "model_version": "1"}
    body = json.dumps({**tricky, "outputs": [{"name": "o", "data": [1.5]}]}).encode()
    out, hlen = rename_response(body, None, "ctr", 12)  # type: ignore[misc]
    assert hlen is None
    assert json.loads(out) == {
        "id": 'x"model_name":"spoof',
        "model_name": "ctr",
        "model_version": "12",
        "outputs": [{"name": "o", "data": [1.5]}],
    }
    head = json.dumps({"model_name": "b", "outputs": [{"name": "o"}]}).encode()
    tail = bytes(range(256)) * 40  # binary tensor bytes follow the header
    out, hlen = rename_response(head + tail, str(len(head)), "ctr", 3)  # type: ignore[misc]
    assert out.endswith(tail) and int(hlen) == len(out) - len(tail)  # type: ignore[arg-type]
    assert json.loads(out[: int(hlen)]) == {  # type: ignore[arg-type]
        "model_version": "3",
        "model_name": "ctr",
        "outputs": [{"name": "o"}],
    }
    late = json.dumps({"outputs": [[0.25] * 3000], "model_name": "z"}).encode()
    out, _ = rename_response(late, None, "é", 1)  # type: ignore[misc]
    assert json.loads(out)["model_name"] == "é" and len(json.loads(out)["outputs"][0]) == 3000
    # Triton's own opening, recognised by its bytes when the backend's name is known
    fast = b'{"model_name":"m__v2","model_version":"1","outputs":[]}'
    want = b'{"model_name":"ctr","model_version":"17","outputs":[]}'
    assert rename_response(fast, None, "ctr", 17, "m__v2") == (want, None)
    assert rename_response(fast + tail, str(len(fast)), "ctr", 17, "m__v2") == (
        want + tail,
        str(len(want)),
    )
    assert rename_response(fast, None, "ctr", 17, "other") == (want, None)  # by scanning
    for not_kserve in (b"[1, 2]", b"not json", b'{"model_name": 5}', b'{"a": '):
        assert rename_response(not_kserve, None, "m", 1) is None
    assert rename_response(b"{}", "9", "m", 1) is None  # header length past the body


@pytest.mark.timeout(60)
def test_logged_inputs_replay_through_another_version(gw_models) -> None:  # noqa: F811
    sink = MemorySink()
    t = table("replayed", gw_models.endpoint(1), log_inputs=True)
    app = make_app(sink=sink, tables=[t])
    x = np.array([1.0, 2.0, 4.0], dtype=np.float32)
    with ServerThread(app) as server:
        client = _client(server.url)
        _infer(client, "replayed", x, binary=True, request_id="r1")
        client.close()
        httpx.post(
            f"{server.http_url}/v2/models/replayed/infer",
            json=infer_body([7.0]),
            headers={"x-request-id": "r2"},
        )
    records = wait_until(lambda: len(sink.records) == 2 and sink.records, 10, "records")
    first = records[0]
    assert first.inputs is not None and first.inputs["inputs"][0]["data"] == [1.0, 2.0, 4.0]
    assert first.features == {"INPUT0": [1.0, 2.0, 4.0]}
    replay_sink = MemorySink()
    no_inputs = records[1].model_copy(update={"inputs": None, "request_id": "r3"})
    results = replay([*records, no_inputs], gw_models.endpoint(3), sink=replay_sink)
    assert [r.request_id for r in results] == [first.request_id, records[1].request_id, "r3"]
    a, b, missing = results
    assert a.error is None and a.version == 3 and a.latency_ms > 0
    assert a.outputs is not None
    out = {o["name"]: o["data"] for o in a.outputs["outputs"]}
    assert out == {"OUTPUT0": [2.0, 4.0, 8.0], "VERSION": [3.0]}
    assert {o["name"]: o["data"] for o in b.outputs["outputs"]}["OUTPUT0"] == [14.0]  # type: ignore[union-attr]
    assert missing.error is not None and missing.error.startswith("not_replayable")
    logged = replay_sink.records
    assert [(r.request_id, r.arm, r.version) for r in logged] == [
        (first.request_id, "shadow", 3),
        (records[1].request_id, "shadow", 3),
    ]


@pytest.mark.timeout(60)
def test_breaker_takes_a_failing_canary_out_and_sends_its_users_to_prod(gw_models) -> None:  # noqa: F811
    sink = MemorySink()
    policy = BreakerPolicy(window_s=60, min_requests=6, max_error_rate=0.5, timeout_s=5)
    t = table(
        "guarded",
        gw_models.endpoint(1),
        canary=(gw_models.endpoint(9), 50.0),
        breaker=policy,
        generation=1,
    )
    users = [f"user-{i}" for i in range(60)]

    async def scenario() -> None:
        app = make_app(sink=sink, tables=[t])
        gw = app.state.gateway
        async with running(app) as c:
            statuses = []
            for u in users:
                r = await c.post(
                    "/v2/models/guarded/infer", json=infer_body([1.0]), headers={"x-user-id": u}
                )
                statuses.append(
                    (
                        r.status_code,
                        r.headers["x-modelops-arm"],
                        r.headers.get("x-modelops-fallback"),
                    )
                )
            failed = [s for s in statuses if s[0] != 200]
            # the canary raised (a backend 5xx, answered 502) until the breaker opened: a run
            # of failures trips it before the window's rate rule would
            assert len(failed) == policy.consecutive_failures < policy.min_requests
            assert all(s == (502, "canary", None) for s in failed)
            last_failure = max(i for i, s in enumerate(statuses) if s[0] != 200)
            after = statuses[last_failure + 1 :]
            assert after and all(s[0] == 200 and s[1] == "prod" for s in after)
            assert any(s[2] == "breaker" for s in after)  # rerouted canary users say so
            await until(lambda: sink.events_of("breaker_open"), 5, "breaker event")
            ev = sink.events_of("breaker_open")[0]
            assert (ev.model_id, ev.slice, ev.version) == ("guarded", "global", 9)
            assert ev.detail["arm"] == "canary" and ev.detail["error_rate"] == 1.0
            states = (await c.get("/admin/breakers")).json()["breakers"]
            assert [(b["version"], b["state"]) for b in states] == [(9, "open")]
            metrics = (await c.get("/metrics")).text
            assert (
                metric(
                    metrics,
                    "modelops_gateway_breaker_trips_total",
                    arm="canary",
                    model="guarded",
                    version="9",
                )
                == 1.0
            )
            assert gw.metrics.breakers_open._value.get() == 1
            # the control plane publishes a newer table: the breaker starts afresh
            newer = t.model_copy(update={"generation": 2})
            await c.put("/admin/routes", json=snapshot(newer).model_dump(mode="json"))
            assert (await c.get("/admin/breakers")).json()["breakers"] == []

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_breaker_half_opens_after_cooldown_and_closes_on_a_good_probe(gw_models) -> None:  # noqa: F811
    """The candidate is a stand-in backend whose health the test flips."""
    healthy = {"ok": False}

    def backend(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if not healthy["ok"]:
            return 500, {"content-type": "application/json"}, b'{"error": "down"}'
        answer = (
            b'{"outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1], "data": [0]}]}'
        )
        return 200, {"content-type": "application/json"}, answer

    policy = BreakerPolicy(window_s=60, min_requests=3, max_error_rate=0.5, timeout_s=5)
    sink = MemorySink()

    async def scenario(url: str) -> None:
        cand = Endpoint(version=5, backend=BackendKind.triton, url=url, backend_model="c")
        t = table("half", gw_models.endpoint(1), canary=(cand, 100.0), breaker=policy)
        app = make_app(sink=sink, tables=[t], breaker_cooldown_s=0.2)
        gw = app.state.gateway
        async with running(app) as c:

            async def arm() -> tuple[str, int]:
                r = await c.post(
                    "/v2/models/half/infer", json=infer_body([1.0]), headers={"x-user-id": "u"}
                )
                return r.headers["x-modelops-arm"], r.status_code

            async def first_canary() -> tuple[str, int]:
                """Poll (the cool-down is compressed to 0.2 s) until a request probes."""
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 5
                while (got := await arm())[0] != "canary":
                    assert loop.time() < deadline, "the breaker never half-opened"
                    await asyncio.sleep(0.02)
                return got

            for _ in range(3):
                assert await arm() == ("canary", 502)
            assert await arm() == ("prod", 200)  # open: the canary's user gets prod
            assert await first_canary() == ("canary", 502)  # the probe fails...
            assert await arm() == ("prod", 200)  # ...so it stays open for another cool-down
            assert gw.breakers.states()[0].state == "open"
            healthy["ok"] = True
            assert await first_canary() == ("canary", 200)  # a good probe closes it
            assert await arm() == ("canary", 200)
            assert gw.breakers.states()[0].state == "closed"
            await until(lambda: sink.events_of("breaker_closed"), 5, "breaker_closed event")
            assert [e.kind for e in sink.events] == ["breaker_open", "breaker_closed"]

    with json_server(backend) as url:
        asyncio.run(scenario(url))


@pytest.mark.timeout(60)
def test_outcomes_are_handed_to_the_log(gw_models) -> None:  # noqa: F811
    sink = MemorySink()

    async def scenario() -> None:
        async with running(make_app(sink=sink, tables=[table("o", gw_models.endpoint(1))])) as c:
            for rid in ("r1", "r2"):  # outcomes name requests the gateway served
                r = await c.post(
                    "/v2/models/o/infer", json=infer_body([1.0]), headers={"x-request-id": rid}
                )
                assert r.status_code == 200
            r = await c.post("/v1/outcomes", json={"request_id": "r1", "value": 1.0})
            assert r.status_code == 202
            r = await c.post(
                "/v1/outcomes", json={"request_id": "r2", "name": "click", "value": 0, "ts": 12.5}
            )
            assert r.status_code == 202
            await until(lambda: len(sink.outcomes) == 2, 5, "outcomes")

    asyncio.run(scenario())
    first, second = sink.outcomes
    assert (first.request_id, first.name, first.value) == ("r1", "label", 1.0)
    assert (second.request_id, second.name, second.value, second.ts) == ("r2", "click", 0.0, 12.5)


@pytest.mark.timeout(60)
def test_metrics_count_requests_by_model_version_and_arm(gw_models) -> None:  # noqa: F811
    t = table("counted", gw_models.endpoint(1), canary=(gw_models.endpoint(2), 100.0))

    async def scenario() -> None:
        async with running(make_app(tables=[t])) as c:
            for _ in range(3):
                await c.post("/v2/models/counted/infer", json=infer_body([1.0]))
            for i in range(2):
                await c.post(
                    "/v2/models/counted/infer",
                    json=infer_body([1.0]),
                    headers={"x-user-id": f"u{i}"},
                )
            await c.post("/v2/models/counted/infer", content=b"{nope")
            text = (await c.get("/metrics")).text
        assert (
            metric(
                text,
                "modelops_gateway_requests_total",
                arm="prod",
                code="200",
                model="counted",
                version="1",
            )
            == 3.0
        )
        assert (
            metric(
                text,
                "modelops_gateway_requests_total",
                arm="canary",
                code="200",
                model="counted",
                version="2",
            )
            == 2.0
        )
        assert (
            metric(
                text,
                "modelops_gateway_requests_total",
                arm="none",
                code="400",
                model="counted",
                version="none",
            )
            == 1.0
        )
        assert (
            metric(
                text,
                "modelops_gateway_request_seconds_count",
                arm="canary",
                model="counted",
                version="2",
            )
            == 2.0
        )

    asyncio.run(scenario())
