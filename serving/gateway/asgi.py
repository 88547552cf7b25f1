"""The ASGI layer: the bare fast path for inference, the body limit, the token check and
the plain answers the gateway gives itself."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import Response

from modelops.service_token import TOKEN_ENV, bearer_ok
from serving.routing import Endpoint

if TYPE_CHECKING:
    from serving.gateway.traffic import Gateway

__all__ = [
    "Answer",
    "BodyLimit",
    "GatewayApp",
    "Refusal",
    "RequestView",
    "TokenAuth",
    "decode_body",
    "drain_body",
    "error_body",
    "error_response",
    "nests_deeper",
    "send_plain",
]

log = logging.getLogger("modelops.gateway")


class Refusal(Exception):
    """An answer the gateway gives itself, with the version and arm when one was chosen."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        endpoint: Endpoint | None = None,
        arm: str | None = None,
        error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}
        self.endpoint = endpoint
        self.arm = arm
        self.error = error


_ENCODINGS = {"gzip": 16 + 15, "x-gzip": 16 + 15, "deflate": 15}  # zlib wbits


def _decode_sync(body: bytes, encoding: str, limit: int) -> bytes:
    enc = encoding.strip().lower()
    wbits = _ENCODINGS.get(enc)
    if wbits is None:
        raise Refusal(
            415, f"Content-Encoding {encoding!r} is not supported; allowed: gzip, deflate, identity"
        )
    import zlib

    for bits in (wbits, -15) if enc == "deflate" else (wbits,):  # zlib-wrapped, or raw
        d = zlib.decompressobj(bits)
        try:
            out = d.decompress(body, limit + 1)
        except zlib.error as exc:
            error: str = str(exc)
            continue
        if len(out) > limit:
            raise Refusal(413, f"request body exceeds {limit} bytes once decompressed")
        if not d.eof:
            error = "the compressed stream is truncated"
            continue
        if d.unused_data:
            error = f"{len(d.unused_data)} bytes follow the compressed stream"
            continue
        return out
    raise Refusal(400, f"request body is not valid {enc} data ({error})")


async def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """The body with its Content-Encoding undone (off the event loop: a 64 MiB inflate)."""
    if len(body) < 65536:
        return _decode_sync(body, encoding, limit)
    return await asyncio.to_thread(_decode_sync, body, encoding, limit)


def nests_deeper(obj: Any, limit: int) -> bool:
    """Whether a decoded JSON value nests deeper than `limit` (iteratively: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            items = v.values()
        elif isinstance(v, list):
            items = v
        else:
            continue
        if depth > limit:
            return True
        stack.extend((x, depth + 1) for x in items if isinstance(x, dict | list))
    return False


def error_body(message: str, **extra: Any) -> bytes:
    return json.dumps({"error": message, **extra}).encode()


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body = error_body(message, **extra)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


class RequestView:
    """The few request facts the gateway reads, straight from the ASGI scope."""

    __slots__ = ("headers", "query", "_params")

    def __init__(self, headers: dict[str, str], query: bytes) -> None:
        self.headers = headers
        self.query = query
        self._params: dict[str, str] | None = None

    @classmethod
    def from_scope(cls, scope: Any) -> RequestView:
        return cls(
            {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            scope.get("query_string") or b"",
        )

    def param(self, name: str) -> str | None:
        if self._params is None:
            from urllib.parse import parse_qsl

            self._params = dict(parse_qsl(self.query.decode("latin-1"), keep_blank_values=True))
        return self._params.get(name)


@dataclass(slots=True)
class Answer:
    """A response as plain data, sendable over bare ASGI or as a Starlette Response."""

    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str | None
    after: Callable[[], Awaitable[None]] | None = None  # work to do once the answer is sent

    async def send(self, send: Any, *, close: bool = False) -> None:
        raw = [(b"content-length", str(len(self.body)).encode())]
        if self.content_type:
            raw.append((b"content-type", self.content_type.encode("latin-1")))
        for k, v in self.headers.items():
            raw.append((k.encode("latin-1"), v.encode("latin-1")))
        if close:
            raw.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})

    def response(self) -> Response:
        return Response(
            self.body, status_code=self.status, headers=self.headers, media_type=self.content_type
        )


class GatewayApp(FastAPI):
    """The FastAPI app, serving `POST /v2/models/{model}/infer` before the framework does.

    FastAPI's routing, dependency solving, telemetry hooks and Request objects cost more
    than the gateway's whole per-request budget, so the hot path is a bare ASGI handler.
    The route is still declared on the app, for its OpenAPI document.
    """

    gateway: Gateway

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            schema.setdefault("components", {})["securitySchemes"] = {
                "serviceToken": {"type": "http", "scheme": "bearer"}
            }
        return self.openapi_schema  # type: ignore[return-value]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith("/v2/models/") and path.endswith("/infer"):
                model = path[11:-6]
                version = None
                if "/versions/" in model:  # /v2/models/{model}/versions/{version}/infer
                    model, _, version = model.partition("/versions/")
                if model and "/" not in model and (version is None or "/" not in version):
                    started = False

                    async def tracked(msg: Any) -> None:
                        nonlocal started
                        started = True
                        await send(msg)

                    try:
                        await self.gateway.asgi_infer(model, scope, receive, tracked, version)
                    except Exception:
                        log.exception("gateway bug on %s", path)
                        if not started:
                            await Answer(
                                500, {}, error_body("internal gateway error"), "application/json"
                            ).send(send, close=True)
                    return
        await super().__call__(scope, receive, send)


class BodyLimit:
    """413 for bodies over the limit: by Content-Length up front, by counting otherwise."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        chunked = False
        for k, v in scope["headers"]:
            if k == b"content-length":
                length = v
            elif k == b"transfer-encoding":
                chunked = True
        if length is None and not chunked:  # no body
            await self.app(scope, receive, send)
            return
        if length is not None:
            if not length.isdigit():
                await send_plain(send, 400, "Content-Length must be a non-negative integer")
                return
            if int(length) > self.max:
                drained = await drain_body(receive, int(length))
                await send_plain(send, 413, f"request body exceeds {self.max} bytes", drained)
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): buffer up to the limit, then replay it to the app.
        # (FastAPI turns any error raised while it reads a body into a 400.)
        chunks: list[bytes] = []
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.max:
                drained = not msg.get("more_body", False) or await drain_body(receive, None)
                await send_plain(send, 413, f"request body exceeds {self.max} bytes", drained)
                return
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Any:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


_UNAUTHORIZED = (
    "missing or wrong bearer token; send 'Authorization: Bearer <token>' with the token from "
    f"{TOKEN_ENV} or $MODELOPS_HOME/gateway.token"
)


def _protected(path: str) -> bool:
    """Every write and every admin route: route pushes, outcomes, /admin/*."""
    return path.startswith(("/admin", "/v1/outcomes"))


class TokenAuth:
    """401 before anything else runs (body limit, JSON parsing, validation) unless a
    protected request carries the service token, so an unauthenticated caller can neither
    change anything nor learn anything about the tables or the validation rules."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not _protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        auth = length = None
        chunked = False
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v
            elif k == b"content-length":
                length = v
            elif k == b"transfer-encoding":
                chunked = True
        if bearer_ok(auth, self.token):
            await self.app(scope, receive, send)
            return
        drained = True
        if length is not None or chunked:
            remaining = int(length) if length is not None and length.isdigit() else None
            drained = await drain_body(receive, remaining)
        await send_plain(
            send, 401, _UNAUTHORIZED, drained, [(b"www-authenticate", b'Bearer realm="modelops"')]
        )


async def send_plain(
    send: Any,
    status: int,
    message: str,
    keep_alive: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or ()),
    ]
    if not keep_alive:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_DRAIN_BYTES = 1 << 20
_DRAIN_S = 2.0


async def drain_body(receive: Any, remaining: int | None) -> bool:
    """Read and discard the rest of a refused body, within a budget; True if it ended.

    Closing a connection with unread request bytes makes the kernel answer with a reset,
    which can destroy the refusal before the client reads it. A small remainder is cheaper
    to read than to explain; a large one is not, and the connection is closed instead.
    """
    if remaining is not None and remaining > _DRAIN_BYTES:
        return False
    seen = 0
    try:
        async with asyncio.timeout(_DRAIN_S):
            while True:
                msg = await receive()
                if msg["type"] != "http.request":
                    return False
                seen += len(msg.get("body", b""))
                if seen > _DRAIN_BYTES:
                    return False
                if not msg.get("more_body", False):
                    return True
    except TimeoutError:
        return False
