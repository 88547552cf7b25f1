"""Run the gateway: one or more uvicorn processes sharing one port, with TCP_NODELAY.

uvicorn's own `--workers N` hands its workers a listening socket created with protocol 0;
accepted sockets inherit that, asyncio then skips TCP_NODELAY, and every keep-alive
request after the first waits ~40 ms on Nagle and the peer's delayed ACK. So the gateway
scales differently: each worker process binds its own socket on the shared port with
SO_REUSEPORT (the kernel spreads connections across them), created with IPPROTO_TCP so
asyncio sets TCP_NODELAY itself, and runs a single-worker uvicorn whose HTTP protocol also
sets TCP_NODELAY on every accepted connection, so no event loop or socket path can lose it.
Each process counts what it saw; `GET /admin/server` reports it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "CONNECTION_STATS",
    "make_listener",
    "nodelay_protocol",
    "serve_app",
    "run_workers",
]

log = logging.getLogger("modelops.gateway")

CONNECTION_STATS: dict[str, int] = {
    "accepted": 0,  # connections this process accepted
    "nodelay_on_accept": 0,  # already had TCP_NODELAY when the protocol saw them
    "nodelay": 0,  # have TCP_NODELAY after the protocol's own setsockopt
}


def make_listener(host: str, port: int, *, reuse_port: bool, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket created with IPPROTO_TCP, so accepted sockets report it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(False)
    return sock


def _set_nodelay(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    CONNECTION_STATS["accepted"] += 1
    if sock is None:
        return
    try:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
            CONNECTION_STATS["nodelay_on_accept"] += 1
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
            CONNECTION_STATS["nodelay"] += 1
    except OSError:  # not a TCP socket (a Unix socket in tests): nothing to do
        pass


def nodelay_protocol(http: str = "httptools") -> type:
    """uvicorn's HTTP protocol class, setting TCP_NODELAY on each accepted connection."""
    base: type
    try:
        if http == "h11":
            raise ImportError
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    except ImportError:  # httptools is optional in uvicorn; h11 always ships with it
        from uvicorn.protocols.http.h11_impl import H11Protocol as base

    class NoDelayProtocol(base):  # type: ignore[misc,valid-type]
        def connection_made(self, transport: Any) -> None:
            _set_nodelay(transport)
            super().connection_made(transport)

    NoDelayProtocol.__name__ = f"NoDelay{base.__name__}"
    return NoDelayProtocol


def serve_app(
    app: Any,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    log_level: str = "warning",
    http: str = "httptools",
    loop: str = "auto",
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve `app` in this process until SIGINT/SIGTERM, on a pre-bound no-delay socket.

    `loop` is "auto" (uvloop when installed) or "asyncio"."""
    import asyncio

    import uvicorn

    sock = make_listener(host, port, reuse_port=reuse_port)
    config = uvicorn.Config(
        app,
        http=nodelay_protocol(http),
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=75,
        server_header=False,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        if on_ready is not None:
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if server.started:
                on_ready(sock.getsockname()[1])
        await task

    try:
        if loop == "asyncio":
            asyncio.run(main())
        else:
            _run_uvloop(main)
    finally:
        sock.close()


def _run_uvloop(main: Callable[[], Any]) -> None:
    import asyncio

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
        return
    uvloop.run(main())


def _reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (without listening) so the port is ours; a non-listening socket gets no traffic."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s, s.getsockname()[1]


def run_workers(
    target: Callable[..., None],
    args: tuple[Any, ...],
    *,
    host: str,
    port: int,
    workers: int,
    on_ready: Callable[[int], None] | None = None,
    max_restarts: int = 5,
) -> int:
    """Run `target(*args, port, ready)` in `workers` processes sharing `port` (SO_REUSEPORT).

    Each worker sets its `ready` event once it listens. The parent only supervises: it
    reserves the port (so port 0 becomes one concrete port for all workers), reports ready
    when every worker is, restarts a worker that dies, and forwards SIGINT/SIGTERM.
    """
    reserve, port = _reserve_port(host, port)
    ctx = multiprocessing.get_context("spawn")
    procs: dict[int, Any] = {}
    events: dict[int, Any] = {}
    stopping = False
    restarts = 0

    def spawn(slot: int) -> None:
        events[slot] = ready = ctx.Event()
        p = ctx.Process(target=target, args=(*args, port, ready), name=f"gateway-worker-{slot}")
        p.start()
        procs[slot] = p

    def all_ready(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for slot, ev in events.items():
            while not ev.wait(0.1):
                if time.monotonic() > deadline or not procs[slot].is_alive():
                    return False
        return True

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    old_int = signal.signal(signal.SIGINT, stop)
    old_term = signal.signal(signal.SIGTERM, stop)
    try:
        for slot in range(workers):
            spawn(slot)
        if not all_ready(120):
            log.error("gateway workers did not come up on port %s", port)
            stopping = True
            restarts = max_restarts + 1
        elif on_ready is not None:
            on_ready(port)
        while not stopping:
            time.sleep(0.2)
            for slot, p in list(procs.items()):
                if not p.is_alive() and not stopping:
                    restarts += 1
                    if restarts > max_restarts:
                        log.error("gateway worker keeps dying (exit %s); giving up", p.exitcode)
                        stopping = True
                        break
                    log.warning("gateway worker %s exited (%s); restarting", slot, p.exitcode)
                    spawn(slot)
    finally:
        for p in procs.values():
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)
        reserve.close()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    return 1 if restarts > max_restarts else 0
