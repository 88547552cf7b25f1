"""`gateway --workers N`: processes sharing a port by SO_REUSEPORT, each with TCP_NODELAY.

uvicorn's own multi-worker mode hands its workers a listener created with protocol 0, so
asyncio leaves Nagle on for every accepted connection and keep-alive requests stall ~40 ms
on delayed ACKs. These tests check the gateway's replacement on the server side: every
worker reports, from `getsockopt(TCP_NODELAY)` on each connection it accepted, that the
option is on. Nothing is measured in time.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gateway_fixtures import (  # noqa: F401 - gw_models is a fixture
    AUTH,
    TOKEN,
    ServerThread,
    gw_models,
    infer_body,
    make_app,
    snapshot,
    table,
    wait_until,
)

from serving.gateway.server import make_listener
from serving.triton.server import free_port


def _get(conn: http.client.HTTPConnection, path: str) -> dict:
    conn.request("GET", path, headers=AUTH)
    r = conn.getresponse()
    return json.loads(r.read())


@pytest.fixture
def gateway_process(gw_models, tmp_path: Path) -> Iterator[tuple[int, Path]]:  # noqa: F811
    routes = tmp_path / "routes.json"
    routes.write_text(
        snapshot(table("multi", gw_models.endpoint(1), generation=1)).model_dump_json()
    )
    state = tmp_path / "state.json"
    port = free_port()
    cmd = [
        sys.executable,
        "-c",
        "import sys; from serving.cli import gateway_main; sys.exit(gateway_main())",
        "--port",
        str(port),
        "--workers",
        "2",
        "--routes",
        str(routes),
        "--no-predlog",
        "--state-file",
        str(state),
        "--pull-interval",
        "0.05",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "MODELOPS_GATEWAY_TOKEN": TOKEN},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("gateway ready"), line + proc.stdout.read().decode()
        yield port, state
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.timeout(120)
def test_workers_share_the_port_and_every_connection_has_nodelay(
    gateway_process,
    gw_models,  # noqa: F811
) -> None:
    port, _ = gateway_process
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(16)]
    try:
        pids = {}
        for c in conns:
            for _ in range(3):  # keep-alive: several requests per connection
                body = json.dumps(infer_body([1.0, 2.0])).encode()
                c.request(
                    "POST",
                    "/v2/models/multi/infer",
                    body=body,
                    headers={"content-type": "application/json"},
                )
                r = c.getresponse()
                assert r.status == 200 and r.getheader("x-modelops-version") == "1"
                r.read()
            server = _get(c, "/admin/server")
            pids[server["pid"]] = server["connections"]
        # the kernel spread 16 connections over both workers (all on one: p = 2^-15)
        assert len(pids) == 2
        for pid, stats in pids.items():
            assert stats["accepted"] >= 1
            assert stats["nodelay"] == stats["accepted"], (pid, stats)
            # the listener is created with IPPROTO_TCP, so asyncio had set it already
            assert stats["nodelay_on_accept"] == stats["accepted"], (pid, stats)
        # an unmodified tritonclient works against the multi-process gateway
        import tritonclient.http as th

        client = th.InferenceServerClient(f"127.0.0.1:{port}")
        x = np.arange(4, dtype=np.float32)
        inp = th.InferInput("INPUT0", [4], "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("multi", [inp]).as_numpy("OUTPUT0"), x * 2)
        client.close()
    finally:
        for c in conns:
            c.close()


@pytest.mark.timeout(120)
def test_a_push_to_one_worker_reaches_all_of_them(gateway_process, gw_models) -> None:  # noqa: F811
    port, state = gateway_process
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(16)]
    try:
        newer = snapshot(table("multi", gw_models.endpoint(2), generation=2)).model_dump_json()
        conns[0].request(
            "PUT", "/admin/routes", body=newer, headers={"content-type": "application/json", **AUTH}
        )
        r = conns[0].getresponse()
        assert r.status == 200 and json.loads(r.read())["applied"][0]["generation"] == 2

        def all_on_v2() -> bool:
            return all(
                _get(c, "/admin/routes")["generations"] == {"multi/global": 2} for c in conns
            )

        wait_until(all_on_v2, 20, "every worker to take generation 2")
        assert len({_get(c, "/admin/server")["pid"] for c in conns}) == 2
        assert json.loads(state.read_text())["tables"][0]["generation"] == 2
    finally:
        for c in conns:
            c.close()


def test_nodelay_protocol_sets_it_even_when_the_listener_loses_it() -> None:
    """The failure mode itself, on a proto-0 listener as uvicorn's supervisor creates it:
    asyncio leaves Nagle on, and the gateway's protocol turns TCP_NODELAY on anyway."""
    from serving.gateway import server as gateway_server

    async def accepted_nodelay(sock: socket.socket) -> int:
        result: list[int] = []

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                s = transport.get_extra_info("socket")
                result.append(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, w = await asyncio.open_connection(*sock.getsockname())
        while not result:
            await asyncio.sleep(0.01)
        w.close()
        server.close()
        return result[0]

    bare = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0)  # proto 0, like uvicorn
    bare.bind(("127.0.0.1", 0))
    assert asyncio.run(accepted_nodelay(bare)) == 0  # Nagle stays on: the bug
    tcp = make_listener("127.0.0.1", 0, reuse_port=False)  # IPPROTO_TCP
    assert asyncio.run(accepted_nodelay(tcp)) != 0

    bare = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0)
    bare.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bare.bind(("127.0.0.1", 0))
    bare.listen(16)
    before = dict(gateway_server.CONNECTION_STATS)
    with ServerThread(make_app(), sock=bare, loop="asyncio") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        for _ in range(3):
            assert _get(conn, "/v2/health/live") == {"live": True}
        conn.close()
    after = gateway_server.CONNECTION_STATS
    accepted = after["accepted"] - before["accepted"]
    assert accepted == 1
    assert after["nodelay_on_accept"] - before["nodelay_on_accept"] == 0  # asyncio did not
    assert after["nodelay"] - before["nodelay"] == 1  # the protocol did


def test_cli_refuses_bad_flags(tmp_path: Path) -> None:
    env = dict(os.environ)
    code = "import sys; from serving.cli import gateway_main; sys.exit(gateway_main())"
    cmd = [sys.executable, "-c", code]
    r = subprocess.run(
        [*cmd, "--workers", "0", "--no-predlog"], capture_output=True, env=env, timeout=60
    )
    assert r.returncode == 1 and b"--workers" in r.stderr
    r = subprocess.run(
        [*cmd, "--schema-dir", str(tmp_path), "--no-predlog"],
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 1 and b"--registry" in r.stderr
