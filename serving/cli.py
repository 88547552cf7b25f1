"""`modelops serve …` and `modelops controller …`, registered through the `modelops.cli`
entry point so the core CLI never imports the serving plane."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run a serving-plane process").add_subparsers(
        dest="sub", required=True
    )
    t = serve.add_parser("triton", help="run tritonserver on a model repository")
    t.add_argument("--repository", required=True, metavar="DIR")
    t.add_argument("--http-port", type=int, default=8000)
    t.add_argument("--grpc-port", type=int, default=8001)
    t.add_argument("--metrics-port", type=int, default=8002)
    t.set_defaults(fn=cmd_serve_triton)


def cmd_serve_triton(args: argparse.Namespace) -> int:
    import signal
    import time
    from pathlib import Path

    from serving.triton_server import TritonServer

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
