"""The hot path's HTTP client against real sockets: keep-alive, stale connections, framing."""

from __future__ import annotations

import asyncio

import pytest

from serving.gateway.backend_pool import BackendPool, BackendTimeout, BackendUnavailable
from serving.triton.server import free_port


async def _server(handler) -> tuple[asyncio.AbstractServer, str, list[int]]:  # type: ignore[no-untyped-def]
    accepted: list[int] = []

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(r, w)
        finally:
            w.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v2/models/m/infer", accepted


async def _read_request(r: asyncio.StreamReader) -> bytes:
    head = await r.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    return await r.readexactly(n)


@pytest.mark.timeout(30)
def test_keep_alive_reuses_one_connection() -> None:
    async def handler(r, w) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                body = await _read_request(r)
            except asyncio.IncompleteReadError:
                return
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Echo: yes\r\n\r\n%s"
                    % (len(body), body))  # fmt: skip
            await w.drain()

    async def scenario() -> None:
        server, url, accepted = await _server(handler)
        pool = BackendPool()
        for i in range(5):
            resp = await pool.post(url, b"body%d" % i, {"content-type": "x"}, 5)
            assert (resp.status, resp.body, resp.headers["x-echo"]) == (200, b"body%d" % i, "yes")
        assert len(accepted) == 1
        await pool.aclose()
        server.close()

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_a_connection_the_server_closed_is_replaced_transparently() -> None:
    """The server closes after each answer without saying so (an idle-timeout close)."""

    async def handler(r, w) -> None:  # type: ignore[no-untyped-def]
        await _read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()

    async def scenario() -> None:
        server, url, accepted = await _server(handler)
        pool = BackendPool()
        for _ in range(5):
            assert (await pool.post(url, b"x", {}, 5)).body == b"ok"
            await asyncio.sleep(0)
        assert (await pool.post(url, b"x", {}, 5)).body == b"ok"  # immediately after
        assert len(accepted) == 6
        await pool.aclose()
        server.close()

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_chunked_answers_timeouts_and_refused_connections() -> None:
    async def chunked(r, w) -> None:  # type: ignore[no-untyped-def]
        await _read_request(r)
        w.write(b"HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")  # fmt: skip
        await w.drain()

    async def silent(r, w) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(10)

    async def scenario() -> None:
        server, url, _ = await _server(chunked)
        pool = BackendPool()
        resp = await pool.post(url, b"x", {}, 5)
        assert (resp.status, resp.body) == (500, b"hello world")
        slow, slow_url, _ = await _server(silent)
        with pytest.raises(BackendTimeout):
            await pool.post(slow_url, b"x", {}, 0.2)
        with pytest.raises(BackendUnavailable):
            await pool.post(f"http://127.0.0.1:{free_port()}/x", b"x", {}, 5)
        with pytest.raises(BackendUnavailable):
            await pool.post("ftp://127.0.0.1/x", b"x", {}, 5)
        await pool.aclose()
        server.close()
        slow.close()

    asyncio.run(scenario())
