"""`modelops serve gateway`: flags, process wiring, and the multi-worker launch.

`serving.cli` registers this command with `modelops serve` like any other; only the command
itself imports the web stack, so the core CLI stays fast. Each worker process builds its own
app here (sink, schema source, contract resolver), so nothing that cannot cross a process
boundary has to.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from modelops.cli import CliParser, bounded_int, database_url, port, seconds
from modelops.errors import ModelopsError, SpecError
from serving.gateway.config import GatewayConfig, NullSink
from serving.routing import RoutingSnapshot

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["register", "build_app_from_args", "cmd_serve_gateway", "main"]


def register(serve: Any) -> None:
    """Add `gateway` to the `modelops serve` subcommands."""
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


def _config_from_args(args: argparse.Namespace, port: int | None = None) -> GatewayConfig:
    try:
        return _build_config(args, port)
    except ValidationError as exc:
        # The fields are the flags: say which flag, in one line, not pydantic's report.
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        flag = _FLAGS.get(field, "--" + field.replace("_", "-"))
        raise SpecError(f"{flag} {err.get('input')!r}: {err['msg']}") from None


_FLAGS = {
    "pull_interval_s": "--pull-interval",
    "schema_poll_s": "--schema-poll",
    "shadow_queue_size": "--shadow-queue",
}


def _build_config(args: argparse.Namespace, port: int | None = None) -> GatewayConfig:
    return GatewayConfig(
        host=args.host,
        port=args.port if port is None else port,
        controller_url=args.controller_url,
        pull_interval_s=args.pull_interval,
        state_file=Path(args.state_file) if args.state_file else None,
        schema_poll_s=args.schema_poll,
        max_body_bytes=args.max_body_bytes,
        shadow_workers=args.shadow_workers,
        shadow_queue_size=args.shadow_queue,
    )


def build_app_from_args(args: argparse.Namespace, port: int | None = None) -> FastAPI:
    """Everything `modelops serve gateway` wires together, for one process."""
    from serving.gateway.app import create_app
    from serving.gateway.contracts import RegistryContracts

    if (args.schema_dir is None) != (args.registry is None):
        raise SpecError(
            "request-time contract checks need --schema-dir and --registry together (or neither)"
        )
    config = _config_from_args(args, port)
    sink: Any
    if args.no_predlog:
        sink = NullSink()
    else:
        from serving.predlog import PredictionLog

        sink = PredictionLog(args.predlog, flush_interval_s=args.predlog_flush_interval)
    schema_source = contracts = None
    if args.schema_dir is not None:
        from modelops.contracts import FileSchemaSource
        from modelops.registry import Registry

        schema_source = FileSchemaSource(args.schema_dir)
        contracts = RegistryContracts(Registry(args.registry))
    app = create_app(config, sink=sink, schema_source=schema_source, contracts=contracts)
    if args.routes:
        try:
            snap = RoutingSnapshot.model_validate_json(Path(args.routes).read_bytes())
        except (OSError, ValidationError) as exc:
            raise SpecError(f"{args.routes}: not a routing snapshot: {exc}") from None
        if app.state.gateway.store.apply(snap).applied:
            app.state.gateway.store.save_state()
    app.state.sink = sink
    return app


def _worker(args: argparse.Namespace, port: int, ready: Any) -> None:
    """One worker process: build the app, serve on the shared port until told to stop."""
    from serving.gateway.server import serve_app

    logging.basicConfig(level=args.log_level.upper())
    app = build_app_from_args(args, port)
    try:
        serve_app(
            app,
            args.host,
            port,
            reuse_port=True,
            log_level=args.log_level,
            http=args.http,
            on_ready=lambda _port: ready.set(),
        )
    finally:
        app.state.sink.close()


def cmd_serve_gateway(args: argparse.Namespace) -> int:
    from serving.gateway.server import run_workers, serve_app

    if args.workers < 1:
        raise SpecError(f"--workers {args.workers}: allowed: 1 or more")
    if args.state_file is None:
        # A restarted gateway serves its last table before the controller answers, and
        # workers sharing a port pass pushes to each other through this file.
        if args.port:
            home = Path(os.environ.get("MODELOPS_HOME") or ".modelops")
            args.state_file = str(home / f"gateway-{args.port}.routes.json")
        elif args.workers > 1:
            import tempfile

            args.state_file = str(Path(tempfile.mkdtemp(prefix="gateway-")) / "routes.json")

    def ready(port: int) -> None:
        print(
            f"gateway ready: http://{args.host}:{port} ({args.workers} worker"
            f"{'s' if args.workers > 1 else ''})",
            flush=True,
        )

    if args.workers == 1:
        app = build_app_from_args(args)
        try:
            serve_app(
                app,
                args.host,
                args.port,
                log_level=args.log_level,
                http=args.http,
                on_ready=ready,
            )
        finally:
            app.state.sink.close()
        return 0
    if (args.schema_dir is None) != (args.registry is None):
        raise SpecError("request-time contract checks need --schema-dir and --registry together")
    return run_workers(
        _worker, (args,), host=args.host, port=args.port, workers=args.workers, on_ready=ready
    )


def main(argv: list[str] | None = None) -> int:
    """`python -c 'from serving.gateway.cli import main; main()' ...`: the command without the
    `modelops serve` prefix, for running a gateway where the CLI is not wired."""
    import sys

    parser = CliParser(prog="gateway")
    sub = parser.add_subparsers(dest="cmd", required=True)
    register(sub)
    try:
        args = parser.parse_args(["gateway", *(sys.argv[1:] if argv is None else argv)])
        return int(args.fn(args))
    except ModelopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
