"""Sticky splits and routing-table updates.

The proportion and orthogonality tests are pure functions over 100k synthetic users: the
hash is deterministic, so they cannot flake, and each bound is the binomial 4-sigma
interval (or a chi-square critical value) the split must fall in. The app-level tests run
real gateways in process against the real Triton.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from gateway_fixtures import (  # noqa: F401 - gw_models is a fixture
    MemorySink,
    gw_models,
    infer_body,
    json_server,
    make_app,
    output,
    running,
    snapshot,
    table,
    until,
)

from serving.routing import BackendKind, Endpoint, assign
from serving.triton.server import free_port

N_USERS = 100_000
USERS = [f"user-{i}" for i in range(N_USERS)]


def _ep(version: int) -> Endpoint:
    return Endpoint(
        version=version, backend=BackendKind.triton, url="http://127.0.0.1:1", backend_model="m"
    )


def _within_4_sigma(count: int, n: int, p: float) -> bool:
    sigma = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= 4 * sigma


@pytest.mark.parametrize("percent", [1.0, 7.5, 50.0])
def test_canary_share_is_binomially_right(percent: float) -> None:
    t = table("m", _ep(1), canary=(_ep(2), percent))
    canary = sum(assign(t, u).arm == "canary" for u in USERS)  # type: ignore[union-attr]
    assert _within_4_sigma(canary, N_USERS, percent / 100), canary


def test_ab_arms_are_binomially_right() -> None:
    t = table("m", _ep(1), ab=("ranking", [(_ep(1), 50.0), (_ep(2), 30.0), (_ep(3), 20.0)]))
    counts = {1: 0, 2: 0, 3: 0}
    for u in USERS:
        counts[assign(t, u).endpoint.version] += 1  # type: ignore[union-attr]
    for version, share in ((1, 0.5), (2, 0.3), (3, 0.2)):
        assert _within_4_sigma(counts[version], N_USERS, share), counts


def _chi2_2x2(pairs: list[tuple[bool, bool]]) -> float:
    cells = {(a, b): 0 for a in (False, True) for b in (False, True)}
    for p in pairs:
        cells[p] += 1
    n = len(pairs)
    rows = {a: cells[(a, False)] + cells[(a, True)] for a in (False, True)}
    cols = {b: cells[(False, b)] + cells[(True, b)] for b in (False, True)}
    return sum(
        (cells[(a, b)] - rows[a] * cols[b] / n) ** 2 / (rows[a] * cols[b] / n)
        for a in (False, True)
        for b in (False, True)
    )


# chi-square, 1 degree of freedom: P(X > 15.14) = 1e-4
CHI2_CRIT = 15.14


def test_experiment_layers_are_orthogonal() -> None:
    checkout = table("checkout", _ep(1), ab=("checkout-layer", [(_ep(1), 50.0), (_ep(2), 50.0)]))
    ranking = table("ranking", _ep(1), ab=("ranking-layer", [(_ep(1), 50.0), (_ep(2), 50.0)]))
    canary = table("search", _ep(1), canary=(_ep(2), 50.0))

    def arm(t, u):  # type: ignore[no-untyped-def]
        return assign(t, u).endpoint.version == 2

    first = [arm(checkout, u) for u in USERS]
    assert _chi2_2x2(list(zip(first, [arm(ranking, u) for u in USERS], strict=True))) < CHI2_CRIT
    assert _chi2_2x2(list(zip(first, [arm(canary, u) for u in USERS], strict=True))) < CHI2_CRIT
    # The statistic does detect dependence: one layer against itself is fully correlated.
    same_layer = table("other", _ep(1), ab=("checkout-layer", [(_ep(1), 50.0), (_ep(2), 50.0)]))
    assert _chi2_2x2(list(zip(first, [arm(same_layer, u) for u in USERS], strict=True))) > 1000


def test_no_user_id_means_prod() -> None:
    t = table("m", _ep(1), canary=(_ep(2), 100.0), ab=("l", [(_ep(3), 100.0)]))
    a = assign(t, None)
    assert a is not None and a.arm == "prod" and a.endpoint.version == 1
    assert assign(t, "someone").arm != "prod"  # type: ignore[union-attr]


# ---------------------------------------------------------------------- through the gateway


@pytest.mark.timeout(120)
def test_same_user_same_arm_across_replicas_and_restart(gw_models, tmp_path: Path) -> None:  # noqa: F811
    t = table("sticky", gw_models.endpoint(1), canary=(gw_models.endpoint(2), 40.0))
    state = tmp_path / "routes.json"
    users = [f"u{i}" for i in range(150)]

    async def arms(app) -> dict[str, tuple[str, str, float]]:  # type: ignore[no-untyped-def]
        out = {}
        async with running(app) as c:
            for u in users:
                r = await c.post(
                    "/v2/models/sticky/infer", json=infer_body([1.0]), headers={"x-user-id": u}
                )
                assert r.status_code == 200, r.text
                out[u] = (
                    r.headers["x-modelops-arm"],
                    r.headers["x-modelops-version"],
                    output(r, "VERSION")[0],
                )
        return out

    async def scenario() -> None:
        replica_a = make_app(state_file=state)
        async with running(replica_a) as c:
            r = await c.put("/admin/routes", json=snapshot(t).model_dump(mode="json"))
            assert r.json()["applied"][0]["generation"] == 1
        a = await arms(replica_a)
        b = await arms(make_app(tables=[t]))
        restarted = await arms(make_app(state_file=state))  # routes only from the state file
        assert a == b == restarted
        served = {arm for arm, _, _ in a.values()}
        assert served == {"prod", "canary"}
        for arm, version, answered in a.values():
            # the header names the version that actually answered
            assert float(version) == answered
            assert (arm == "canary") == (version == "2")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_no_user_id_is_served_by_prod(gw_models) -> None:  # noqa: F811
    t = table("nouser", gw_models.endpoint(1), canary=(gw_models.endpoint(2), 100.0))

    async def scenario() -> None:
        async with running(make_app(tables=[t])) as c:
            r = await c.post("/v2/models/nouser/infer", json=infer_body([2.0]))
            assert r.status_code == 200
            assert r.headers["x-modelops-arm"] == "prod"
            assert r.headers["x-modelops-version"] == "1"
            assert output(r) == [4.0]
            r = await c.post("/v2/models/nouser/infer?user_id=a", json=infer_body([2.0]))
            assert r.headers["x-modelops-arm"] == "canary"

    asyncio.run(scenario())


def test_put_routes_takes_only_newer_generations(tmp_path: Path) -> None:
    ep1, ep2 = _ep(1), _ep(2)

    async def scenario() -> None:
        app = make_app(state_file=tmp_path / "s.json")
        async with running(app) as c:
            r = await c.put(
                "/admin/routes",
                json=snapshot(table("m", ep1, generation=2)).model_dump(mode="json"),
            )
            assert r.status_code == 200
            assert [a["generation"] for a in r.json()["applied"]] == [2]
            older = snapshot(table("m", ep2, generation=1), table("n", ep2, generation=1))
            r = await c.put("/admin/routes", json=older.model_dump(mode="json"))
            body = r.json()
            assert [(a["model_id"], a["generation"]) for a in body["applied"]] == [("n", 1)]
            assert [(i["model_id"], i["generation"], i["current"]) for i in body["ignored"]] == [
                ("m", 1, 2)
            ]
            same = snapshot(table("m", ep2, generation=2))
            r = await c.put("/admin/routes", json=same.model_dump(mode="json"))
            assert r.json()["applied"] == [] and r.json()["ignored"][0]["current"] == 2
            bad = snapshot(
                table(
                    "m",
                    Endpoint(
                        version=5, backend=BackendKind.triton, url="not a url", backend_model="x"
                    ),
                    generation=9,
                )
            )
            r = await c.put("/admin/routes", json=bad.model_dump(mode="json"))
            assert r.status_code == 400 and "not a url" in r.json()["error"]
            r = await c.get("/admin/routes")
            routes = r.json()
            assert routes["generations"] == {"m/global": 2, "n/global": 1}
            prod = {t["model_id"]: t["prod"]["version"] for t in routes["tables"]}
            assert prod == {"m": 1, "n": 2}
        saved = json.loads((tmp_path / "s.json").read_text())
        assert {t["model_id"]: t["generation"] for t in saved["tables"]} == {"m": 2, "n": 1}

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_restarted_gateway_serves_last_table_while_controller_is_down(
    gw_models,  # noqa: F811
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.json"
    t = table("restart", gw_models.endpoint(2), generation=7)
    dead_controller = f"http://127.0.0.1:{free_port()}"

    async def scenario() -> None:
        async with running(make_app(state_file=state)) as c:
            await c.put("/admin/routes", json=snapshot(t).model_dump(mode="json"))
        app = make_app(state_file=state, controller_url=dead_controller, pull_interval_s=0.05)
        async with running(app) as c:
            gw = app.state.gateway
            await until(
                lambda: gw.metrics.route_pull_failures._value.get() >= 3, 10, "failed pulls"
            )
            r = await c.post("/v2/models/restart/infer", json=infer_body([1.5]))
            assert r.status_code == 200 and r.headers["x-modelops-version"] == "2"
            assert output(r) == [3.0]
            assert (await c.get("/v2/health/ready")).status_code == 200
            assert (await c.get("/admin/routes")).json()["generations"] == {"restart/global": 7}

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_pull_loop_takes_newer_tables_and_survives_controller_errors(gw_models) -> None:  # noqa: F811
    served = {"snap": snapshot(table("pulled", gw_models.endpoint(1), generation=3)), "fail": False}
    seen_queries: list[str] = []

    def controller(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        seen_queries.append(path)
        if served["fail"]:
            return 500, {}, b"down"
        return 200, {"content-type": "application/json"}, served["snap"].model_dump_json().encode()

    async def scenario(url: str) -> None:
        app = make_app(controller_url=url, pull_interval_s=0.05)
        gw = app.state.gateway
        async with running(app) as c:
            await until(lambda: gw.store.generations().get("pulled/global") == 3, 10, "pull")
            await until(
                lambda: any("gen=pulled%2Fglobal%3A3" in q for q in seen_queries),
                10,
                "a pull that names the known generation",
            )
            served["fail"] = True
            before = gw.metrics.route_pull_failures._value.get()
            await until(
                lambda: gw.metrics.route_pull_failures._value.get() > before + 2, 10, "failed pulls"
            )
            r = await c.post("/v2/models/pulled/infer", json=infer_body([1.0]))
            assert r.status_code == 200 and r.headers["x-modelops-version"] == "1"
            served["fail"] = False
            served["snap"] = snapshot(table("pulled", gw_models.endpoint(2), generation=4))
            await until(lambda: gw.store.generations().get("pulled/global") == 4, 10, "pull")
            r = await c.post("/v2/models/pulled/infer", json=infer_body([1.0]))
            assert r.headers["x-modelops-version"] == "2"

    with json_server(controller) as url:
        asyncio.run(scenario(url))


def test_sibling_processes_converge_through_the_state_file(tmp_path: Path) -> None:
    """Workers sharing a port: a push lands in one; the others read it from the state file."""
    state = tmp_path / "shared.json"

    async def scenario() -> None:
        a = make_app(state_file=state, pull_interval_s=0.05)
        b = make_app(state_file=state, pull_interval_s=0.05)
        async with running(a) as ca, running(b) as cb:
            await ca.put(
                "/admin/routes",
                json=snapshot(table("x", _ep(1), generation=5)).model_dump(mode="json"),
            )
            await cb.put(
                "/admin/routes",
                json=snapshot(table("y", _ep(1), generation=2)).model_dump(mode="json"),
            )
            want = {"x/global": 5, "y/global": 2}
            await until(lambda: a.state.gateway.store.generations() == want, 10, "a converges")
            await until(lambda: b.state.gateway.store.generations() == want, 10, "b converges")
            await until(
                lambda: (
                    {
                        t["model_id"]: t["generation"]
                        for t in json.loads(state.read_text())["tables"]
                    }
                    == {"x": 5, "y": 2}
                ),
                10,
                "the file converges",
            )

    asyncio.run(scenario())


def test_slice_routing_falls_back_to_global_table() -> None:
    async def scenario() -> None:
        eu = table("sl", _ep(2), slice_="eu", generation=1)
        glob = table("sl", _ep(1), generation=1)
        app = make_app(tables=[eu, glob])
        store = app.state.gateway.store
        assert store.lookup("sl", "eu").prod.version == 2  # type: ignore[union-attr]
        assert store.lookup("sl", "us").prod.version == 1  # type: ignore[union-attr]
        assert store.lookup("other", "global") is None

    asyncio.run(scenario())
