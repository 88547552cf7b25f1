"""`modelops serve …` and `modelops controller …`, registered through the `modelops.cli`
entry point so the core CLI never imports the serving plane.

Every command's flags are declared here and its work is imported when it runs, so listing
the commands loads neither the web stack nor a backend client."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from modelops.cli import CliParser, bounded_int, database_url, port, seconds
from modelops.errors import ModelopsError, SpecError
from serving import why_cli

__all__ = ["register", "gateway_main"]


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run a serving-plane process").add_subparsers(
        dest="sub", required=True
    )
    t = serve.add_parser("triton", help="run tritonserver on a model repository")
    t.add_argument("--repository", required=True, metavar="DIR")
    t.add_argument("--http-port", type=port("--http-port"), default=8000)
    t.add_argument("--grpc-port", type=port("--grpc-port"), default=8001)
    t.add_argument("--metrics-port", type=port("--metrics-port"), default=8002)
    t.set_defaults(fn=cmd_serve_triton)
    _gateway_args(serve)

    ctl = sub.add_parser("controller", help="reconcile desired state onto the serving plane")
    csub = ctl.add_subparsers(dest="sub", required=True)
    run = csub.add_parser("run", help="reconcile in a loop and serve /v1/routes, /v1/status")
    _controller_args(run)
    run.add_argument("--interval", type=seconds("--interval"), default=2.0, metavar="SECONDS")
    run.add_argument(
        "--max-backoff",
        type=seconds("--max-backoff"),
        default=10.0,
        metavar="SECONDS",
        help="after failed passes, wait at most this long before the next (default 10)",
    )
    run.add_argument(
        "--port", type=port("--port"), default=8090, help="port for /v1/routes and /v1/status"
    )
    run.set_defaults(fn=cmd_controller_run)
    rec = csub.add_parser("reconcile", help="one reconcile pass")
    _controller_args(rec)
    rec.add_argument(
        "--once",
        action="store_true",
        required=True,
        help="run a single pass and exit (the loop is `controller run`)",
    )
    rec.set_defaults(fn=cmd_controller_reconcile)
    why_cli.register(sub)


def _gateway_args(serve: Any) -> None:
    """`modelops serve gateway`: its flags here, its work in `serving.gateway.launch`."""
    g = serve.add_parser(
        "gateway",
        help="run the gateway (KServe v2 + OpenAI traffic manager)",
        description="Route, mirror and log inference traffic by the controller's tables.",
    )
    g.add_argument("--host", default="127.0.0.1", type=_listen_host)
    g.add_argument("--port", type=port("--port"), default=8080)
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port through SO_REUSEPORT (each sets TCP_NODELAY)",
    )
    g.add_argument("--controller-url", default=None, help="pull routes from {URL}/v1/routes")
    g.add_argument(
        "--pull-interval", type=seconds("--pull-interval"), default=0.5, metavar="SECONDS"
    )
    g.add_argument(
        "--state-file",
        default=None,
        metavar="PATH",
        help="persist the last routing snapshot here and load it at startup (default: "
        "$MODELOPS_HOME/gateway-PORT.routes.json; worker processes share it)",
    )
    g.add_argument(
        "--routes",
        default=None,
        metavar="FILE",
        help="a RoutingSnapshot JSON file applied at startup, like a push",
    )
    g.add_argument(
        "--schema-dir",
        default=None,
        metavar="DIR",
        help="feature schemas (v1.yaml, v2.yaml, ...) for request-time checks",
    )
    g.add_argument("--schema-poll", type=seconds("--schema-poll"), default=5.0, metavar="SECONDS")
    g.add_argument(
        "--registry",
        default=None,
        metavar="URL",
        type=database_url("registry"),
        help="registry database that resolves feature contracts",
    )
    g.add_argument(
        "--predlog",
        default=None,
        metavar="URL",
        type=database_url("prediction log"),
        help="prediction log database (default: the embedded SQLite log)",
    )
    g.add_argument("--no-predlog", action="store_true", help="keep no prediction log")
    g.add_argument(
        "--predlog-flush-interval",
        type=seconds("--predlog-flush-interval", zero=True),
        default=0.1,
        metavar="SECONDS",
        help="commit logged predictions at least this often: the most a crash (kill -9) of "
        "this process can lose; SIGTERM loses nothing",
    )
    g.add_argument("--max-body-bytes", type=bounded_int("--max-body-bytes", 1), default=64 * 2**20)
    g.add_argument("--shadow-workers", type=bounded_int("--shadow-workers", 1), default=4)
    g.add_argument("--shadow-queue", type=bounded_int("--shadow-queue", 1), default=1024)
    g.add_argument("--http", choices=["httptools", "h11"], default="httptools")
    g.add_argument("--log-level", default="warning")
    g.set_defaults(fn=cmd_serve_gateway)


def _listen_host(text: str) -> str:
    """An interface to bind, refused at parse time rather than by the socket after startup."""
    import socket

    try:
        socket.getaddrinfo(text, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SpecError(
            f"--host {text!r} is not an address this machine can listen on ({reason}); "
            "allowed: an IP address or a resolvable host name"
        ) from None
    return text


def cmd_serve_gateway(args: argparse.Namespace) -> int:
    from serving.gateway.launch import cmd_serve_gateway as run

    return run(args)


def gateway_main(argv: list[str] | None = None) -> int:
    """`python -c 'from serving.cli import gateway_main; gateway_main()' ...`: the gateway
    command without the `modelops serve` prefix, where the CLI is not wired."""
    parser = CliParser(prog="gateway")
    sub = parser.add_subparsers(dest="cmd", required=True)
    _gateway_args(sub)
    try:
        args = parser.parse_args(["gateway", *(sys.argv[1:] if argv is None else argv)])
        return int(args.fn(args))
    except ModelopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _controller_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--triton", required=True, metavar="HOST:PORT", help="Triton HTTP address")
    p.add_argument(
        "--repository",
        required=True,
        metavar="DIR",
        help="Triton model repository the controller writes",
    )
    p.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="URL",
        help="a gateway to push routing tables to (repeatable)",
    )
    p.add_argument("--artifacts", default=None, metavar="URI")
    p.add_argument("--rendering", choices=["portable", "native"], default="portable")
    p.add_argument(
        "--retention",
        type=seconds("--retention", zero=True),
        default=3600.0,
        metavar="SECONDS",
        help="keep the last good version loaded this long after it leaves traffic",
    )


def _controller(args: argparse.Namespace) -> Any:
    from pathlib import Path

    from modelops.artifacts import LocalArtifactStore, open_store
    from modelops.registry import Registry
    from serving.controller import triton_controller

    store = open_store(args.artifacts) if args.artifacts else LocalArtifactStore.default()
    return triton_controller(
        Registry(args.registry),
        store,
        triton_url=args.triton,
        repository=Path(args.repository),
        gateways=args.gateway,
        rendering=args.rendering,
        retention_s=args.retention,
    )


def cmd_controller_reconcile(args: argparse.Namespace) -> int:
    ctl = _controller(args)
    actions = ctl.reconcile_once()
    for a in actions:
        secs = f" ({a.seconds:.2f}s)" if a.seconds is not None else ""
        print(f"{a.kind:<7} {a.target}{secs} {a.detail}".rstrip())
    if not actions:
        print("nothing to do: actual state matches desired state")
    errors = [a for a in actions if a.kind == "error"]
    if errors:
        print(
            f"error: {len(errors)} reconcile error(s); first: {errors[0].target}: "
            f"{errors[0].detail}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_controller_run(args: argparse.Namespace) -> int:
    import signal
    import time

    from serving.controller import ControllerServer, PassBackoff

    ctl = _controller(args)
    server = ControllerServer(ctl, port=args.port).start()
    print(f"controller serving {server.url}/v1/routes and /v1/status", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    backoff = PassBackoff(base_s=args.interval, cap_s=max(args.interval, args.max_backoff))
    try:
        while not stop:
            # Nothing a pass meets ends the loop: a dead backend or registry is an error
            # on this pass, and the next one comes after a backoff. Only a signal stops it.
            try:
                actions = ctl.reconcile_once()
                failed = any(a.kind == "error" for a in actions)
            except Exception:  # noqa: BLE001 - the loop outlives any one pass; status has it
                actions = ctl.status.last_actions
                failed = True
            for a in actions:
                secs = f" ({a.seconds:.2f}s)" if a.seconds is not None else ""
                print(f"{a.kind:<7} {a.target}{secs} {a.detail}".rstrip(), flush=True)
            delay = backoff.next_delay(failed)
            ctl.status.next_pass_in_s = round(delay, 3)
            if failed:
                print(f"retry   next pass in {delay:.1f}s", flush=True)
            deadline = time.monotonic() + delay
            while not stop and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        server.stop()
    return 0


def cmd_serve_triton(args: argparse.Namespace) -> int:
    import signal
    import time
    from pathlib import Path

    from serving.triton.server import TritonServer

    server = TritonServer(
        Path(args.repository),
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    )
    server.start()
    print(f"tritonserver ready: http {server.http_url}, repository {args.repository}", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and server.alive():
            time.sleep(0.5)
    finally:
        server.stop()
    return 0
