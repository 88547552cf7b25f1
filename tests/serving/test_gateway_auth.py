"""Authentication on the gateway's writes and admin routes.

Every route push, outcome post and /admin route needs `Authorization: Bearer <token>`; a
missing or wrong token gets a 401 with a one-line JSON error before anything else runs,
and nothing changes. The hijack test is the attack as it was reproduced: a table pointing
prod at a foreign backend, pushed over real HTTP, then a gateway restart from the state
file.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import pytest
from gateway_fixtures import (  # noqa: F401 - gw_models is a fixture
    AUTH,
    TOKEN,
    MemorySink,
    ServerThread,
    gw_models,
    infer_body,
    json_server,
    make_app,
    output,
    running,
    snapshot,
    table,
)

from serving.routing import BackendKind, Endpoint

WRONG = [
    {},
    {"authorization": "Bearer not-the-token-0123456789"},
    {"authorization": f"Bearer {TOKEN}x"},
    {"authorization": f"Basic {TOKEN}"},
    {"authorization": TOKEN},
    {"authorization": "Bearer"},
]


def _foreign(url: str = "http://203.0.113.7:8000") -> Endpoint:
    return Endpoint(version=1, backend=BackendKind.triton, url=url, backend_model="evil")


def _ep(version: int) -> Endpoint:
    return Endpoint(
        version=version, backend=BackendKind.triton, url="http://127.0.0.1:1", backend_model="m"
    )


def test_writes_and_admin_routes_refuse_a_missing_or_wrong_token(tmp_path: Path) -> None:
    state = tmp_path / "routes.json"
    hijack = snapshot(table("victim", _foreign(), generation=999)).model_dump(mode="json")

    async def scenario() -> None:
        sink = MemorySink()
        app = make_app(sink=sink, state_file=state)
        gw = app.state.gateway
        async with running(app) as c:  # the controller's push, with the token
            r = await c.put(
                "/admin/routes", json=snapshot(table("victim", _ep(1))).model_dump(mode="json")
            )
            assert r.status_code == 200 and r.json()["applied"]
        saved = state.read_bytes()
        async with running(app, token=None) as c:
            requests = [
                ("PUT", "/admin/routes", {"json": hijack}),
                ("PUT", "/admin/routes", {"content": b"{not json"}),  # 401, not 400
                ("PUT", "/admin/routes", {"content": b"x" * 10_000_000}),  # 401, not 413
                ("POST", "/v1/outcomes", {"json": {"request_id": "r", "value": 0}}),
                ("GET", "/admin/routes", {}),
                ("GET", "/admin/breakers", {}),
                ("GET", "/admin/server", {}),
            ]
            for method, path, kw in requests:
                for headers in WRONG:
                    r = await c.request(method, path, headers=headers, **kw)  # type: ignore[arg-type]
                    assert r.status_code == 401, (method, path, headers, r.text)
                    assert r.headers["www-authenticate"].startswith("Bearer")
                    body = r.json()
                    assert list(body) == ["error"] and "\n" not in body["error"]
                    assert "bearer token" in body["error"]
            # reads that carry no secret and change nothing stay open
            assert (await c.get("/v2/health/live")).status_code == 200
            assert (await c.get("/v2/health/ready")).status_code == 200
            assert (await c.get("/metrics")).status_code == 200
        assert state.read_bytes() == saved
        assert gw.store.generations() == {"victim/global": 1}
        assert gw.store.lookup("victim", "global").prod.url == "http://127.0.0.1:1"
        assert sink.outcomes == []

    asyncio.run(scenario())


@pytest.mark.timeout(90)
def test_route_hijack_over_http_is_refused_and_stays_refused_after_a_restart(
    gw_models,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The reproduced attack: push a table pointing prod at a foreign backend, with no
    token and with wrong ones; prod traffic must keep reaching the real backend, also
    after a restart that reloads the state file."""
    state = tmp_path / "routes.json"
    foreign_hits: list[str] = []
    lock = threading.Lock()

    def foreign(method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        with lock:
            foreign_hits.append(path)
        answer = {"model_name": "victim", "model_version": "1", "outputs": []}
        return 200, {"content-type": "application/json"}, json.dumps(answer).encode()

    def prod_answers(url: str) -> None:
        for i in range(5):
            r = httpx.post(
                f"{url}/v2/models/victim/infer",
                json=infer_body([float(i)]),
                headers={"x-user-id": f"u{i}"},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            assert r.headers["x-modelops-version"] == "1" and r.headers["x-modelops-arm"] == "prod"
            assert output(r) == [2.0 * i] and output(r, "VERSION") == [1.0]

    with json_server(foreign) as evil_url:
        hijack = snapshot(table("victim", _foreign(evil_url), generation=10**9))
        with ServerThread(make_app(state_file=state)) as gw:
            r = httpx.put(
                f"{gw.http_url}/admin/routes",
                json=snapshot(table("victim", gw_models.endpoint(1))).model_dump(mode="json"),
                headers=AUTH,
            )
            assert r.status_code == 200
            for headers in WRONG:
                r = httpx.put(
                    f"{gw.http_url}/admin/routes",
                    json=hijack.model_dump(mode="json"),
                    headers=headers,
                )
                assert r.status_code == 401, r.text
            prod_answers(gw.http_url)
            routes = httpx.get(f"{gw.http_url}/admin/routes", headers=AUTH).json()
            assert routes["generations"] == {"victim/global": 1}
        with ServerThread(make_app(state_file=state)) as gw:  # restarted from the state file
            prod_answers(gw.http_url)
            routes = httpx.get(f"{gw.http_url}/admin/routes", headers=AUTH).json()
            assert routes["tables"][0]["prod"]["url"] == gw_models.url
        assert foreign_hits == []
