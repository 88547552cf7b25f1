"""The controller's HTTP face: `GET /v1/routes` for gateways that pull, `GET /v1/status`."""

from __future__ import annotations

import json
import threading

from modelops.service_token import TOKEN_ENV, bearer_ok, check_token
from serving.controller.reconciler import Controller

__all__ = [
    "ControllerServer",
]


class ControllerServer:
    """Serves `GET /v1/routes` (gateways pull by generation) and `GET /v1/status`, only to
    callers presenting the service token.

    A pull names what the gateway holds (`?gen=MODEL/SLICE:GENERATION[:EPOCH]`, repeated);
    the answer carries only newer tables, or 304 with no body when there are none.
    """

    def __init__(
        self,
        controller: Controller,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
    ):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        ctl = controller
        token = token if token is not None else controller.token
        check_token(token, "the controller's token")

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: bytes, **headers: str) -> None:
                self.send_response(status)
                if status != 304:
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.end_headers()
                if status != 304:
                    self.wfile.write(body)

            def _error(self, status: int, message: str, **headers: str) -> None:
                self._answer(status, json.dumps({"error": message}).encode(), **headers)

            def _authorized(self) -> bool:
                if bearer_ok(self.headers.get("authorization"), token):
                    return True
                self._error(401, _UNAUTHORIZED, WWW_Authenticate='Bearer realm="modelops"')
                return False

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if not self._authorized():
                    return
                url = urlsplit(self.path)
                if url.path == "/v1/routes":
                    gens = parse_qs(url.query, keep_blank_values=True).get("gen")
                    try:
                        have = _parse_gens(gens) if gens else None
                    except ValueError as exc:
                        self._error(400, str(exc))
                        return
                    body = ctl.routes_json(have)
                    if body is None:
                        self._answer(304, b"")
                    else:
                        self._answer(200, body.encode())
                elif url.path == "/v1/status":
                    self._answer(200, ctl.status.model_dump_json().encode())
                else:
                    self._error(404, f"unknown path {url.path!r}; allowed: /v1/routes, /v1/status")

            def _not_allowed(self) -> None:
                if self._authorized():
                    self._error(405, f"{self.command} is not allowed; allowed: GET", Allow="GET")

            do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed  # noqa: N815

            def log_message(self, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ControllerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_UNAUTHORIZED = (
    "missing or wrong bearer token; send 'Authorization: Bearer <token>' with the token from "
    f"{TOKEN_ENV} or $MODELOPS_HOME/gateway.token"
)


def _parse_gens(values: list[str]) -> dict[str, tuple[int, int]]:
    """`MODEL/SLICE:GENERATION[:EPOCH]` per held table, as route key -> (epoch, generation)."""
    out: dict[str, tuple[int, int]] = {}
    for v in values:
        parts = v.rsplit(":", 2)
        try:
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                out[parts[0]] = (int(parts[2]), int(parts[1]))
                continue
            if len(parts) >= 2 and parts[-1].isdigit():
                out[v.rsplit(":", 1)[0]] = (0, int(parts[-1]))
                continue
        except ValueError:  # more digits than int() takes
            pass
        raise ValueError(f"gen={v[:200]!r}: allowed: MODEL/SLICE:GENERATION[:EPOCH]")
    return out
