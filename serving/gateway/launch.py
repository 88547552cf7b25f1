"""What `modelops serve gateway` runs: process wiring and the multi-worker launch.

The flags live in `serving.cli`, which loads this module only when the command runs, so the
core CLI never imports the web stack. Each worker process builds its own app here (sink,
schema source, contract resolver), so nothing that cannot cross a process boundary has to.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from modelops.errors import SpecError
from serving.gateway.config import GatewayConfig, NullSink
from serving.routing import RoutingSnapshot

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["build_app_from_args", "cmd_serve_gateway"]


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
