"""The gateway (traffic manager): routes, mirrors, checks contracts and logs every request.

It speaks the KServe v2 Open Inference Protocol (an unmodified `tritonclient.http` client
works against it as against Triton) and the OpenAI completions API for LLM models. For each
request it picks the version by the routing table of (model, slice) and a sticky hash of
the user, refuses or reroutes a version whose feature contract the current schema breaks
(Invariant 1), forwards the body as the client sent it (decoded if it was compressed),
answers with the model's name and registry version in place of the backend's, mirrors a
sample to the shadow version out of band, and hands a record to the prediction log
without waiting for it. `/v2/models/{model}/versions/{v}/infer` reaches version v itself.

Status codes a client can get from the gateway itself:

| case | status |
|---|---|
| malformed body, bad header or parameter, JSON nested too deep, a number out of range | 400 |
| missing or wrong service token on an admin route, outcome post or route push | 401 |
| unknown model, or a version it does not serve | 404 |
| broken feature contract, fail_closed (no usable fallback) | 409, x-modelops-contract: breaking |
| body larger than `max_body_bytes` (also once decompressed) | 413 |
| a Content-Encoding other than gzip, deflate or identity | 415 |
| backend answered 5xx | 502 with the backend's body |
| backend down, unreachable, version not loaded, nothing serving | 503 with Retry-After |
| backend timeout | 504 with Retry-After |

409 was chosen over 422 because the request itself is fine: it conflicts with the current
state of the feature store, and the same request succeeds once the schema or the route
changes. A backend's own 4xx answers pass through unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelops.contracts import FeatureSchemaSource
from modelops.errors import SpecError
from modelops.service_token import TOKEN_ENV, auth_header, bearer_ok, check_token, service_token
from serving.gateway_breaker import BreakerBoard, BreakerKey, BreakerState
from serving.gateway_contracts import ContractGuard, ContractResolver, RegistryContracts, Verdict
from serving.gateway_http import BackendError, BackendPool, BackendTimeout
from serving.gateway_kserve import (
    DATATYPES,
    BadRequest,
    decode_infer_request,
    parse_infer_header,
    rename_response,
    response_outputs,
)
from serving.gateway_metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from serving.gateway_routes import ApplyResult, RouteStore, endpoints_of
from serving.gateway_shadow import (
    ShadowJob,
    ShadowMirror,
    ShadowResult,
    infer_url,
    openai_url,
    replay,
)
from serving.records import GatewayEvent, Outcome, PredictionRecord, PredictionSink
from serving.routing import (
    BackendKind,
    Endpoint,
    RouteTable,
    RoutingSnapshot,
    assign,
    bucket,
    shadow_sampled,
)

__all__ = [
    "GatewayConfig",
    "Gateway",
    "NullSink",
    "ContractResolver",
    "RegistryContracts",
    "create_app",
    "register_gateway",
    "main",
    "replay",
]

log = logging.getLogger("modelops.gateway")

H_VERSION = "x-modelops-version"
H_ARM = "x-modelops-arm"
H_REQUEST_ID = "x-request-id"
H_FALLBACK = "x-modelops-fallback"
H_CONTRACT = "x-modelops-contract"
_CANDIDATE_ARMS = ("canary", "ab")
PINNED = "pinned"  # the arm of a request for /v2/models/{model}/versions/{version}
_MAX_ID_LEN = 256
_MAX_JSON_DEPTH = 64  # OpenAI bodies: messages, content parts, tool schemas
_TOO_DEEP = f"request body is not valid JSON: it nests deeper than {_MAX_JSON_DEPTH} levels"
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')


class GatewayConfig(BaseModel):
    """Everything a gateway process is configured with; routes come from the controller."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="interface `modelops serve gateway` binds")
    port: int = Field(8080, ge=0, le=65535, description="port; 0 picks a free one")
    controller_url: str | None = Field(
        None, description="base URL of the controller; pulled at GET {url}/v1/routes"
    )
    pull_interval_s: float = Field(
        0.5, gt=0, description="how often to pull routes and re-read the state file"
    )
    state_file: Path | None = Field(
        None, description="last applied routing snapshot; loaded at startup"
    )
    schema_poll_s: float = Field(
        5.0, gt=0, description="how often to ask the feature schema source for its version"
    )
    max_body_bytes: int = Field(64 * 2**20, gt=0, description="larger request bodies get 413")
    backend_timeout_s: float = Field(30.0, gt=0, description="read timeout towards backends")
    connect_timeout_s: float = Field(2.0, gt=0, description="connect timeout towards backends")
    retry_after_s: int = Field(1, ge=0, description="Retry-After on 503 and 504")
    max_connections: int = Field(512, gt=0, description="backend connection pool size")
    shadow_queue_size: int = Field(1024, gt=0, description="mirrors waiting; more are dropped")
    shadow_workers: int = Field(4, gt=0, description="threads sending mirrors")
    record_queue_size: int = Field(
        100_000, gt=0, description="records waiting for the sink; more are dropped and counted"
    )
    event_interval_s: float = Field(
        10.0, ge=0, description="at most one shadow_dropped/contract event per table per interval"
    )
    breaker_cooldown_s: float | None = Field(
        None,
        gt=0,
        description="half-open an open breaker after this long; None: stay open until the "
        "controller publishes a newer table",
    )
    outcome_window_s: float = Field(
        3600.0,
        gt=0,
        description="an outcome is accepted only for a request this process served this recently",
    )
    outcome_max_ids: int = Field(
        200_000,
        gt=0,
        description="served request ids remembered for outcomes (about 200 bytes each); the "
        "oldest are forgotten first",
    )
    token: SecretStr | None = Field(
        None,
        description="bearer token for route pushes, outcomes, admin routes and route pulls; "
        f"None: {TOKEN_ENV}, else $MODELOPS_HOME/gateway.token (created on first use)",
    )


class NullSink:
    """A PredictionSink that keeps nothing: for a gateway run without a prediction log."""

    def submit(self, record: PredictionRecord) -> bool:
        return True

    def submit_outcome(self, outcome: Outcome) -> bool:
        return True

    def submit_event(self, event: GatewayEvent) -> bool:
        return True

    def close(self) -> None:
        return None


# ---------------------------------------------------------------------- records


@dataclass(slots=True)
class _Pending:
    """Everything a PredictionRecord needs, captured on the request path without building it."""

    request_id: str
    ts: float
    model_id: str
    version: int
    arm: str
    slice: str
    user_id: str | None
    user_bucket: int | None
    table: RouteTable
    latency_ms: float
    error: str | None
    status: int | None
    resp_body: bytes
    resp_hlen: str | None
    req_header: dict[str, Any] | None = None
    req_body: bytes | None = None
    req_hlen: int = 0
    llm: bool = False
    prompt_tokens: int | None = None

    def build(self) -> PredictionRecord:
        outputs: dict[str, Any] | None = None
        if self.resp_body and self.status is not None and self.status < 400:
            outputs = response_outputs(self.resp_body, self.resp_hlen)
        inputs = features = None
        if self.req_body is not None:
            if self.llm:
                try:
                    inputs = json.loads(self.req_body)
                except ValueError:
                    inputs = None
            elif self.req_header is not None:
                inputs = decode_infer_request(self.req_header, self.req_body, self.req_hlen)
                features = {i["name"]: i["data"] for i in inputs["inputs"]}
        ub = self.user_bucket
        if ub is None and self.user_id is not None:
            ub = bucket(_layer_salt(self.table), self.user_id)
        prompt_tokens = self.prompt_tokens
        if self.llm and prompt_tokens is None and outputs is not None:
            usage = outputs.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                prompt_tokens = usage["prompt_tokens"]
        # Every field is built right here with its declared type: skip re-validation (it
        # would cost as much as the rest of the record's handling).
        return PredictionRecord.model_construct(
            request_id=self.request_id,
            ts=self.ts,
            model_id=self.model_id,
            version=self.version,
            arm=self.arm,
            slice=self.slice,
            user_bucket=ub,
            latency_ms=self.latency_ms,
            error=self.error,
            outputs=outputs,
            inputs=inputs if isinstance(inputs, dict) else None,
            features=features,
            prompt_tokens=prompt_tokens,
        )


def _layer_salt(table: RouteTable) -> str:
    """The salt `assign` used for this table's active layer: buckets line up with arms."""
    if table.ab_test is not None:
        return f"ab:{table.ab_test.layer}"
    return f"canary:{table.model_id}:{table.slice}"


class _Recorder:
    """Moves records to the sink off the request path.

    The request path appends a small tuple to a deque (O(1)); a task on the loop builds the
    PredictionRecords and submits them in batches. Shadow worker threads append too (deque
    appends are thread-safe) and wake the task through the loop.
    """

    def __init__(self, sink: PredictionSink, metrics: GatewayMetrics, max_items: int) -> None:
        self._sink = sink
        self._metrics = metrics
        self._max = max_items
        self._items: deque[Any] = deque()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0
        self.submitted = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wake = asyncio.Event()

    def put(self, item: Any) -> bool:
        if len(self._items) >= self._max:
            self.dropped += 1
            self._metrics.inc(self._metrics.records_dropped, "queue_full")
            return False
        self._items.append(item)
        if self._wake is not None and not self._wake.is_set():
            self._wake.set()
        return True

    def put_threadsafe(self, item: Any) -> None:
        if len(self._items) >= self._max:
            self.dropped += 1
            self._metrics.inc(self._metrics.records_dropped, "queue_full")
            return
        self._items.append(item)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop closed in between: drained at stop
                pass

    async def run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            n = 0
            while self._items:
                self._submit_one(self._items.popleft())
                n += 1
                if n % 256 == 0:
                    await asyncio.sleep(0)  # let requests in between large batches

    def drain(self) -> None:
        while self._items:
            self._submit_one(self._items.popleft())

    def _submit_one(self, item: Any) -> None:
        kind = "record"
        try:
            if isinstance(item, _Pending):
                ok = self._sink.submit(item.build())
            elif isinstance(item, Outcome):
                kind = "outcome"
                ok = self._sink.submit_outcome(item)
            else:
                kind = "event"
                ok = self._sink.submit_event(item)
        except Exception:  # noqa: BLE001 - the log must never take the gateway down
            log.exception("prediction sink failed on a %s", kind)
            ok = False
        if ok:
            self.submitted += 1
        else:
            self._metrics.inc(self._metrics.records_dropped, kind)


class _ServedIds:
    """Request ids this process served, oldest first, bounded by age and by count, with the
    outcome names already accepted for each.

    An outcome may only name a request that was served here, and only once per name: a
    made-up or replayed id cannot move a window. The value is the serve time, or once an
    outcome arrived (time, name, ...), so an id costs about 200 bytes.
    """

    __slots__ = ("_ids", "max_ids", "window_s")

    def __init__(self, max_ids: int, window_s: float) -> None:
        self._ids: OrderedDict[str, Any] = OrderedDict()
        self.max_ids = max_ids
        self.window_s = window_s

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, rid: str, now: float) -> None:
        ids = self._ids
        old = ids.pop(rid, None)
        ids[rid] = now if old is None or type(old) is float else (now, *old[1:])
        horizon = now - self.window_s
        while ids:
            first = next(iter(ids.values()))
            ts = first if type(first) is float else first[0]
            if len(ids) <= self.max_ids and ts >= horizon:
                break
            ids.popitem(last=False)

    def claim(self, rid: str, name: str, now: float) -> str | None:
        """None if this outcome is the first of its name for a request served here; else
        why not: 'unknown' or 'duplicate'."""
        entry = self._ids.get(rid)
        if entry is None:
            return "unknown"
        if type(entry) is float:
            if entry < now - self.window_s:
                return "unknown"
            self._ids[rid] = (entry, name)
            return None
        if entry[0] < now - self.window_s:
            return "unknown"
        if name in entry[1:]:
            return "duplicate"
        self._ids[rid] = (*entry, name)
        return None

    def unclaim(self, rid: str, name: str) -> None:
        """An accepted outcome could not be queued after all: the name may be posted again."""
        entry = self._ids.get(rid)
        if entry is not None and type(entry) is not float and name in entry[1:]:
            rest = tuple(n for n in entry[1:] if n != name)
            self._ids[rid] = (entry[0], *rest) if rest else entry[0]


# ---------------------------------------------------------------------- routing decisions


@dataclass(slots=True)
class _Decision:
    table: RouteTable
    arm: str
    endpoint: Endpoint
    bucket: int | None
    fallback: str | None


class _Refusal(Exception):
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
        raise _Refusal(
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
            raise _Refusal(413, f"request body exceeds {limit} bytes once decompressed")
        if not d.eof:
            error = "the compressed stream is truncated"
            continue
        if d.unused_data:
            error = f"{len(d.unused_data)} bytes follow the compressed stream"
            continue
        return out
    raise _Refusal(400, f"request body is not valid {enc} data ({error})")


async def _decoded(body: bytes, encoding: str, limit: int) -> bytes:
    """The body with its Content-Encoding undone (off the event loop: a 64 MiB inflate)."""
    if len(body) < 65536:
        return _decode_sync(body, encoding, limit)
    return await asyncio.to_thread(_decode_sync, body, encoding, limit)


def _nests_deeper(obj: Any, limit: int) -> bool:
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


def _error_body(message: str, **extra: Any) -> bytes:
    return json.dumps({"error": message, **extra}).encode()


def _error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body = _error_body(message, **extra)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


class _Req:
    """The few request facts the gateway reads, straight from the ASGI scope."""

    __slots__ = ("headers", "query", "_params")

    def __init__(self, headers: dict[str, str], query: bytes) -> None:
        self.headers = headers
        self.query = query
        self._params: dict[str, str] | None = None

    @classmethod
    def from_scope(cls, scope: Any) -> _Req:
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
class _Answer:
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


class _GatewayApp(FastAPI):
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
                            await _Answer(
                                500, {}, _error_body("internal gateway error"), "application/json"
                            ).send(send, close=True)
                    return
        await super().__call__(scope, receive, send)


class _BodyLimit:
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
                await _send_plain(send, 400, "Content-Length must be a non-negative integer")
                return
            if int(length) > self.max:
                drained = await _drain(receive, int(length))
                await _send_plain(send, 413, f"request body exceeds {self.max} bytes", drained)
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
                drained = not msg.get("more_body", False) or await _drain(receive, None)
                await _send_plain(send, 413, f"request body exceeds {self.max} bytes", drained)
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


class _Auth:
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
            drained = await _drain(receive, remaining)
        await _send_plain(
            send, 401, _UNAUTHORIZED, drained, [(b"www-authenticate", b'Bearer realm="modelops"')]
        )


async def _send_plain(
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


async def _drain(receive: Any, remaining: int | None) -> bool:
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


# ---------------------------------------------------------------------- the gateway


class Gateway:
    """The state of one gateway process: routes, breakers, contract verdicts, mirrors, log."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        sink: PredictionSink,
        schema_source: FeatureSchemaSource | None,
        contracts: ContractResolver | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (schema_source is None) != (contracts is None):
            raise SpecError(
                "contract checks need both a feature schema source and a contract resolver; "
                "give both, or neither to run without request-time contract checks"
            )
        self.config = config
        self.clock = clock
        self.sink = sink
        self.token = (
            check_token(config.token.get_secret_value(), "the gateway's token")
            if config.token is not None
            else service_token()
        )
        self.metrics = GatewayMetrics()
        self.recorder = _Recorder(sink, self.metrics, config.record_queue_size)
        self.served = _ServedIds(config.outcome_max_ids, config.outcome_window_s)
        self.breakers = BreakerBoard(
            on_trip=self._on_trip,
            on_close=self._on_breaker_close,
            cooldown_s=config.breaker_cooldown_s,
            clock=clock,
        )
        self.guard = (
            ContractGuard(schema_source, contracts, poll_s=config.schema_poll_s)
            if schema_source is not None and contracts is not None
            else None
        )
        self.store = RouteStore(config.state_file, on_applied=self._on_applied)
        self.mirror = ShadowMirror(
            queue_size=config.shadow_queue_size,
            workers=config.shadow_workers,
            on_result=self._on_shadow_result,
            connect_timeout_s=config.connect_timeout_s,
        )
        self.pool = BackendPool()  # replaced at start; one per lifespan
        self.client: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_event: dict[tuple[str, str, str], float] = {}
        self._suppressed: dict[tuple[str, str, str], int] = {}
        self._retry = {"retry-after": str(config.retry_after_s)}
        self._save_lock: asyncio.Lock | None = None
        self._pull_ok = True
        self.store.load_state()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        import httpx

        loop = asyncio.get_running_loop()
        self.recorder.bind(loop)
        self._save_lock = asyncio.Lock()
        self.pool = BackendPool(
            connect_timeout_s=self.config.connect_timeout_s,
            max_per_host=self.config.max_connections,
        )
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                self.config.backend_timeout_s, connect=self.config.connect_timeout_s
            ),
            limits=httpx.Limits(
                max_connections=self.config.max_connections,
                max_keepalive_connections=self.config.max_connections,
                keepalive_expiry=60,
            ),
            headers={"accept-encoding": "identity"},
        )
        self.mirror.start()
        self._tasks.append(asyncio.create_task(self.recorder.run(), name="gateway-recorder"))
        if self.guard is not None:
            await asyncio.to_thread(self.guard.poll_once)
            self._tasks.append(asyncio.create_task(self._schema_loop(), name="gateway-schema"))
        self._tasks.append(asyncio.create_task(self._route_loop(), name="gateway-routes"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        self._tasks.clear()
        await asyncio.to_thread(self.mirror.stop)
        await self.pool.aclose()
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        self.recorder.drain()

    async def _schema_loop(self) -> None:
        assert self.guard is not None
        while True:
            await asyncio.sleep(self.guard.poll_s)
            await asyncio.to_thread(self.guard.poll_once)

    async def _route_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.pull_interval_s)
            try:
                await self.sync_state_file()
            except Exception:  # noqa: BLE001 - keep serving the last table
                log.exception("re-reading the gateway state file failed")
            if self.config.controller_url:
                try:
                    await self.pull_once()
                except Exception:  # noqa: BLE001 - keep serving the last table
                    log.exception("applying pulled routes failed")

    async def sync_state_file(self) -> ApplyResult | None:
        """Pick up a table a sibling worker process received and wrote to the state file."""
        if not self.store.state_changed():
            return None
        snap = await asyncio.to_thread(self.store.read_state)
        if snap is None:
            return None
        try:
            result = self.store.apply(snap)
        except SpecError as exc:
            log.warning("ignoring unusable gateway state file: %s", exc)
            return None
        if self.store.newer_than(snap):
            await self.save_state()
        return result

    async def pull_once(self) -> ApplyResult | None:
        """One pull from the controller; any failure keeps the current tables."""
        import httpx

        url = f"{self.config.controller_url.rstrip('/')}/v1/routes"  # type: ignore[union-attr]
        params = [
            ("gen", f"{k}:{g}" if e == 0 else f"{k}:{g}:{e}")
            for k, (e, g) in self.store.orders().items()
        ]
        try:
            r = await self.client.get(
                url,
                params=params,
                headers=auth_header(self.token),
                timeout=max(1.0, self.config.pull_interval_s * 4),
            )
            if r.status_code in (204, 304):
                return ApplyResult()
            r.raise_for_status()
            snap = RoutingSnapshot.model_validate_json(r.content)
            result = self.store.apply(snap)
        except (httpx.HTTPError, ValidationError, ValueError, SpecError) as exc:
            self.metrics.route_pull_failures.inc()
            if self._pull_ok:  # log the transition, not every failed poll
                log.warning("route pull from %s failed, keeping the last table: %s", url, exc)
            self._pull_ok = False
            return None
        if not self._pull_ok:
            log.warning("route pull from %s works again", url)
        self._pull_ok = True
        if result.applied:
            await self.save_state()
        return result

    async def apply(self, snapshot: RoutingSnapshot) -> ApplyResult:
        """A push: apply newer generations and persist them."""
        result = self.store.apply(snapshot)
        if result.applied:
            await self.save_state()
        return result

    async def save_state(self) -> None:
        if self.store.state_file is None:
            return
        assert self._save_lock is not None
        async with self._save_lock:
            try:
                await asyncio.to_thread(self.store.save_state)
            except OSError as exc:
                log.warning("cannot write gateway state file: %s", exc)

    def _on_applied(self, table: RouteTable, old: RouteTable | None) -> None:
        self.metrics.route_generation.labels(table.model_id, table.slice).set(table.generation)
        if old is not None:  # the control plane has spoken: its candidates start afresh
            self.breakers.reset(table.model_id, table.slice)
            self.metrics.breakers_open.set(self.breakers.open_count())
        if self.guard is not None:
            self.guard.watch(
                ep.feature_contract_ref for ep in endpoints_of(table) if ep.feature_contract_ref
            )

    # ------------------------------------------------------------------ events

    def _event(self, kind: str, table: RouteTable, version: int | None, **detail: Any) -> None:
        self.recorder.put(
            GatewayEvent(
                ts=self.clock(),
                kind=kind,
                model_id=table.model_id,
                slice=table.slice,
                version=version,
                detail=detail,
            )
        )

    def _event_limited(
        self, kind: str, table: RouteTable, version: int | None, **detail: Any
    ) -> None:
        """At most one event per (kind, table) per interval, carrying how many it stands for."""
        key = (kind, table.model_id, table.slice)
        now = time.monotonic()
        last = self._last_event.get(key)
        if last is not None and now - last < self.config.event_interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last_event[key] = now
        count = 1 + self._suppressed.pop(key, 0)
        self._event(kind, table, version, count=count, **detail)

    def _on_trip(self, key: BreakerKey, state: BreakerState) -> None:
        """Runs in whichever thread saw the tripping failure."""
        self.metrics.inc(self.metrics.breaker_trips, key[0], str(key[2]), state.arm)
        self.metrics.breakers_open.set(self.breakers.open_count())
        log.warning(
            "circuit breaker open: %s/%s v%s (%s) error rate %.2f over %d requests",
            key[0],
            key[1],
            key[2],
            state.arm,
            state.error_rate,
            state.requests,
        )
        self.recorder.put_threadsafe(
            GatewayEvent(
                ts=self.clock(),
                kind="breaker_open",
                model_id=key[0],
                slice=key[1],
                version=key[2],
                detail=state.model_dump(mode="json"),
            )
        )

    def _on_breaker_close(self, key: BreakerKey, state: BreakerState) -> None:
        """A half-open probe succeeded (runs in the thread that recorded it)."""
        self.metrics.breakers_open.set(self.breakers.open_count())
        log.warning("circuit breaker closed: %s/%s v%s (%s)", key[0], key[1], key[2], state.arm)
        self.recorder.put_threadsafe(
            GatewayEvent(
                ts=self.clock(),
                kind="breaker_closed",
                model_id=key[0],
                slice=key[1],
                version=key[2],
                detail=state.model_dump(mode="json"),
            )
        )

    # ------------------------------------------------------------------ routing

    def _identity(self, req: _Req) -> tuple[str | None, str]:
        h = req.headers
        user = h.get("x-user-id")
        slice_ = h.get("x-slice")
        if (user is None or slice_ is None) and req.query:
            user = user if user is not None else req.param("user_id")
            slice_ = slice_ if slice_ is not None else req.param("slice")
        if user == "":
            user = None  # an empty id is no id: such requests go to prod
        elif user is not None and len(user) > _MAX_ID_LEN:
            raise _Refusal(400, f"user id must be at most {_MAX_ID_LEN} characters")
        if slice_ is None or slice_ == "":
            slice_ = "global"
        elif len(slice_) > _MAX_ID_LEN:
            raise _Refusal(400, f"slice must be at most {_MAX_ID_LEN} characters")
        return user, slice_

    def _request_id(self, req: _Req) -> str:
        rid = req.headers.get(H_REQUEST_ID)
        if rid is None or rid == "":
            return uuid.uuid4().hex
        if len(rid) > _MAX_ID_LEN:
            raise _Refusal(400, f"x-request-id must be at most {_MAX_ID_LEN} characters")
        return rid

    def _table(self, model: str, slice_: str) -> RouteTable:
        table = self.store.lookup(model, slice_)
        if table is None:
            raise _Refusal(404, f"unknown model {model!r}; the gateway has no route for it")
        return table

    async def _verdict(self, ep: Endpoint) -> Verdict | None:
        ref = ep.feature_contract_ref
        if ref is None or self.guard is None:
            return None
        v = self.guard.cached(ref)
        return v if v is not None else await self.guard.verdict(ref)

    async def decide(self, table: RouteTable, user_id: str | None) -> _Decision:
        """The version this request goes to, after breakers and the contract check."""
        if table.canary is None and table.ab_test is None and table.prod is not None:
            d = _Decision(table, "prod", table.prod, None, None)  # no experiment: skip hashing
            if self.guard is not None:
                await self._check_contract(d)
            return d
        a = assign(table, user_id)
        if a is None:
            raise _Refusal(
                503,
                f"no version of {table.model_id!r} is serving slice {table.slice!r}",
                headers=self._retry,
                error="unreachable",
            )
        d = _Decision(table, a.arm, a.endpoint, a.bucket, None)
        if d.arm in _CANDIDATE_ARMS and not self.breakers.allows(
            (table.model_id, table.slice, d.endpoint.version)
        ):
            self._to_prod(d, "breaker")
        if self.guard is not None:
            await self._check_contract(d)
        return d

    async def decide_pinned(self, table: RouteTable, version: str) -> _Decision:
        """A request that names its version is served by exactly that version if this table
        routes to it (so it is loaded), never rerouted to another, and counted outside every
        experiment's arms (arm "pinned"): its users were not assigned at random."""
        m = table.model_id
        if not version.isdigit() or len(version) > 10:
            raise _Refusal(400, f"version {version!r} is not a registry version number")
        v = int(version)
        ep = next((e for e in endpoints_of(table) if e.version == v), None)
        if ep is None:
            served = ", ".join(str(x) for x in sorted({e.version for e in endpoints_of(table)}))
            raise _Refusal(
                404,
                f"{m!r} v{v} is not loaded for slice {table.slice!r}; loaded versions: "
                f"{served or 'none'}",
            )
        if not self.breakers.allows((m, table.slice, v)):
            raise _Refusal(
                503,
                f"{m!r} v{v} is out of rotation (breaker)",
                headers=self._retry,
                endpoint=ep,
                arm=PINNED,
                error="unreachable",
            )
        verdict = await self._verdict(ep)
        if verdict is not None and not verdict.ok:
            if not verdict.known:
                raise _Refusal(
                    503,
                    f"cannot check the feature contract of {m!r} v{v}: "
                    + "; ".join(verdict.reasons),
                    headers={**self._retry, H_CONTRACT: "unknown"},
                    endpoint=ep,
                    arm=PINNED,
                    error="contract_unknown",
                )
            raise _Refusal(
                409,
                f"{m!r} v{v}: feature contract {verdict.ref} is broken by feature schema "
                f"v{verdict.schema_version}; a request for a named version is not rerouted",
                extra={"contract": verdict.ref, "reasons": list(verdict.reasons)},
                headers={H_CONTRACT: "breaking"},
                endpoint=ep,
                arm=PINNED,
                error="contract_breaking",
            )
        return _Decision(table, PINNED, ep, None, None)

    def _to_prod(self, d: _Decision, reason: str) -> None:
        table = d.table
        self.metrics.inc(
            self.metrics.fallbacks, table.model_id, str(d.endpoint.version), d.arm, reason
        )
        if table.prod is None:
            raise _Refusal(
                503,
                f"{table.model_id!r} v{d.endpoint.version} is out of rotation ({reason}) "
                "and there is no prod version",
                headers=self._retry,
                endpoint=d.endpoint,
                arm=d.arm,
                error="unreachable",
            )
        d.arm, d.endpoint, d.fallback = "prod", table.prod, reason

    async def _check_contract(self, d: _Decision) -> None:
        table = d.table
        v = await self._verdict(d.endpoint)
        if v is None or v.ok:
            return
        if not v.known:
            raise _Refusal(
                503,
                f"cannot check the feature contract of {table.model_id!r} "
                f"v{d.endpoint.version}: {'; '.join(v.reasons)}",
                headers={**self._retry, H_CONTRACT: "unknown"},
                endpoint=d.endpoint,
                arm=d.arm,
                error="contract_unknown",
            )
        if d.arm in _CANDIDATE_ARMS:
            # A candidate is optional: its users get what everyone else gets.
            self._event_limited(
                "contract_breaking", table, d.endpoint.version, contract=v.ref, arm=d.arm
            )
            self._to_prod(d, "contract")
            v = await self._verdict(d.endpoint)
            if v is None or v.ok:
                return
        broken = d.endpoint
        if table.on_breaking_contract == "fallback" and table.fallback is not None:
            fv = await self._verdict(table.fallback)
            if fv is None or fv.ok:
                self.metrics.inc(
                    self.metrics.fallbacks, table.model_id, str(broken.version), d.arm, "contract"
                )
                d.arm, d.endpoint, d.fallback = "fallback", table.fallback, "contract"
                return
        self.metrics.inc(self.metrics.contract_refusals, table.model_id, str(broken.version), d.arm)
        self._event_limited("contract_breaking", table, broken.version, contract=v.ref, arm=d.arm)
        policy = table.on_breaking_contract
        why = "failing closed" if policy == "fail_closed" else "and no usable fallback version"
        raise _Refusal(
            409,
            f"{table.model_id!r} v{broken.version}: feature contract {v.ref} is broken by "
            f"feature schema v{v.schema_version}; {why}",
            extra={
                "contract": v.ref,
                "schema_version": v.schema_version,
                "status": v.status,
                "reasons": list(v.reasons),
                "policy": policy,
            },
            headers={H_CONTRACT: "breaking"},
            endpoint=broken,
            arm=d.arm,
            error="contract_breaking",
        )

    def _headers(self, rid: str, d: _Decision) -> dict[str, str]:
        h = {H_REQUEST_ID: rid, H_VERSION: str(d.endpoint.version), H_ARM: d.arm}
        if d.fallback is not None:
            h[H_FALLBACK] = d.fallback
        return h

    def _log(
        self,
        d: _Decision,
        rid: str,
        user: str | None,
        elapsed_s: float,
        error: str | None,
        status: int | None,
        body: bytes = b"",
        hlen: str | None = None,
        **extra: Any,
    ) -> None:
        """Queue this request's record (O(1)); it is built and submitted off the request path.

        A request that got its answer becomes one an outcome may name; that happens here,
        before the answer leaves, so an outcome posted right after it is never refused.
        """
        t = d.table
        now = self.clock()
        if error is None and status is not None and status < 400:
            self.served.add(rid, now)
        self.recorder.put(
            _Pending(
                rid,
                now,
                t.model_id,
                d.endpoint.version,
                d.arm,
                t.slice,
                user,
                d.bucket,
                t,
                elapsed_s * 1000,
                error,
                status,
                body,
                hlen,
                **extra,
            )
        )

    def _refusal_response(
        self,
        rid: str,
        r: _Refusal,
        table: RouteTable | None,
        user: str | None,
        t0: float,
    ) -> _Answer:
        headers = {H_REQUEST_ID: rid, **r.headers}
        model = table.model_id if table is not None else "unknown"
        version = "none"
        if r.endpoint is not None:
            headers[H_VERSION] = str(r.endpoint.version)
            headers[H_ARM] = r.arm or "prod"
            version = str(r.endpoint.version)
        elapsed = time.perf_counter() - t0
        self.metrics.observe(model, version, r.arm or "none", r.status, elapsed)
        if r.error is not None:
            self.metrics.inc(self.metrics.errors, model, version, r.arm or "none", r.error)
        if table is not None and r.endpoint is not None:
            d = _Decision(table, r.arm or "prod", r.endpoint, None, None)
            self._log(d, rid, user, elapsed, r.error, r.status)
        return _Answer(r.status, headers, _error_body(r.message, **r.extra), "application/json")

    # ------------------------------------------------------------------ forwarding

    async def _post(
        self, d: _Decision, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, bytes, dict[str, str] | None, str | None]:
        """POST to the backend: (status, body, lower-cased headers, error code)."""
        try:
            r = await self.pool.post(url, body, headers, self.config.backend_timeout_s)
        except BackendTimeout:
            return None, b"", None, "timeout"
        except BackendError:
            return None, b"", None, "unreachable"
        status = r.status
        if status < 400:
            return status, r.body, r.headers, None
        if status == 404:
            return status, r.body, r.headers, "not_loaded"
        return status, r.body, r.headers, ("backend_5xx" if status >= 500 else "bad_request")

    def _failure_answer(
        self, d: _Decision, status: int | None, body: bytes, error: str
    ) -> tuple[int, bytes, dict[str, str]]:
        ep = d.endpoint
        name = f"{d.table.model_id!r} v{ep.version}"
        if error == "timeout":
            msg = f"{name} did not answer within {self.config.backend_timeout_s:g} s"
            return 504, json.dumps({"error": msg}).encode(), self._retry
        if error == "unreachable":
            msg = f"the backend serving {name} is unreachable"
            return 503, json.dumps({"error": msg}).encode(), self._retry
        if error == "not_loaded":
            msg = f"{name} is not loaded on its backend ({ep.backend_model})"
            return 503, json.dumps({"error": msg}).encode(), self._retry
        if error == "backend_5xx":
            if status == 503:
                return 503, body, self._retry
            return 502, body, {}
        return status or 502, body, {}

    def _count(self, d: _Decision, status: int, error: str | None, latency_s: float) -> None:
        m, v = d.table.model_id, str(d.endpoint.version)
        self.metrics.observe(m, v, d.arm, status, latency_s)
        if error is not None:
            self.metrics.inc(self.metrics.errors, m, v, d.arm, error)
        if d.arm in _CANDIDATE_ARMS:
            failed = error in ("timeout", "unreachable", "not_loaded", "backend_5xx") or (
                latency_s > d.table.breaker.timeout_s
            )
            self.breakers.record(
                (m, d.table.slice, d.endpoint.version), d.arm, d.table.breaker, failed
            )

    async def _read_body(self, request: Request) -> bytes:
        return await request.body()  # _BodyLimit has enforced max_body_bytes already

    async def asgi_infer(
        self, model: str, scope: Any, receive: Any, send: Any, version: str | None = None
    ) -> None:
        """The hot path as a bare ASGI handler: no framework routing, no Request objects."""
        req = _Req.from_scope(scope)
        t0 = time.perf_counter()
        length = req.headers.get("content-length")
        body = b""
        limit = self.config.max_body_bytes
        too_large = f"request body exceeds {limit} bytes"
        drained = True  # whether the refused body was read to its end (keep-alive is safe)
        try:
            if length is not None and (not length.isdigit() or int(length) > limit):
                if not length.isdigit():
                    drained = False
                    raise _Refusal(400, "Content-Length must be a non-negative integer")
                drained = await _drain(receive, int(length))
                raise _Refusal(413, too_large)
            chunks: list[bytes] = []
            seen = 0
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunk = msg.get("body", b"")
                seen += len(chunk)
                more = msg.get("more_body", False)
                if seen > limit:
                    drained = not more or await _drain(receive, None)
                    raise _Refusal(413, too_large)
                chunks.append(chunk)
                if not more:
                    break
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except _Refusal as r:
            rid = req.headers.get(H_REQUEST_ID) or uuid.uuid4().hex
            answer = self._refusal_response(rid[:_MAX_ID_LEN], r, None, None, t0)
            await answer.send(send, close=not drained)
            return
        answer = await self.infer(model, req, body, t0, version)
        await answer.send(send)
        if answer.after is not None:  # mirror once the user has the answer
            await answer.after()

    async def infer(
        self, model: str, req: _Req, body: bytes, t0: float, version: str | None = None
    ) -> _Answer:
        """`POST /v2/models/{model}[/versions/{version}]/infer`: route, forward, mirror, log.

        The body goes to the backend as the client sent it (decoded if it was compressed);
        the answer comes back with the backend's model name and version replaced by the
        registry's, which is all that is rewritten.
        """
        table: RouteTable | None = None
        user: str | None = None
        rid = uuid.uuid4().hex
        h = req.headers
        try:
            rid = self._request_id(req)
            user, slice_ = self._identity(req)
            table = self._table(model, slice_)
            hlen = h.get("inference-header-content-length")
            encoding = h.get("content-encoding")
            if encoding is not None and encoding.strip().lower() not in ("", "identity"):
                # Decoded here, so the body is checked like any other and the backend gets
                # plain bytes; a bomb stops at max_body_bytes.
                body = await _decoded(body, encoding, self.config.max_body_bytes)
            header: dict[str, Any] | None = None
            header_size = 0
            try:
                header, header_size = parse_infer_header(body, hlen)
            except BadRequest as exc:
                raise _Refusal(400, str(exc)) from None
            if version is None:
                d = await self.decide(table, user)
            else:
                d = await self.decide_pinned(table, version)
            if d.endpoint.backend is BackendKind.vllm:
                raise _Refusal(
                    400,
                    f"{model!r} is an LLM; use /v1/completions or /v1/chat/completions",
                )
        except _Refusal as r:
            return self._refusal_response(rid, r, table, user, t0)

        fwd = {"content-type": h.get("content-type") or "application/json"}
        if hlen is not None:
            fwd["inference-header-content-length"] = hlen
        status, rbody, rheaders, error = await self._post(d, infer_url(d.endpoint), body, fwd)
        headers = self._headers(rid, d)
        resp_hlen = None
        ctype: str | None = None
        if error is None or error == "bad_request":
            out_status = status or 502
            if rheaders is not None:
                resp_hlen = rheaders.get("inference-header-content-length")
                enc = rheaders.get("content-encoding")
                if status == 200 and enc is None:
                    ep = d.endpoint
                    named = rename_response(
                        rbody, resp_hlen, d.table.model_id, ep.version, ep.backend_model
                    )
                    if named is not None:
                        rbody, resp_hlen = named
                if resp_hlen is not None:
                    headers["inference-header-content-length"] = resp_hlen
                ctype = rheaders.get("content-type")
                if enc is not None:
                    headers["content-encoding"] = enc
        else:
            out_status, rbody, extra = self._failure_answer(d, status, rbody, error)
            headers.update(extra)
            ctype = "application/json"
        elapsed = time.perf_counter() - t0
        self._count(d, out_status, error, elapsed)
        log_inputs = d.table.log_inputs and header is not None
        self._log(
            d,
            rid,
            user,
            elapsed,
            error,
            status,
            rbody,
            resp_hlen,
            req_header=header if log_inputs else None,
            req_body=body if log_inputs else None,
            req_hlen=header_size,
        )
        answer = _Answer(out_status, headers, rbody, ctype)
        if d.table.shadow is not None and d.arm != PINNED:
            table = d.table

            async def mirror() -> None:
                await self._mirror(table, rid, body, fwd, llm=False, payload=None)

            answer.after = mirror
        return answer

    # ------------------------------------------------------------------ shadow

    async def _mirror(
        self,
        table: RouteTable,
        rid: str,
        body: bytes,
        headers: dict[str, str],
        *,
        llm: bool,
        payload: dict[str, Any] | None,
        route: str = "completions",
    ) -> None:
        shadow = table.shadow
        if shadow is None or not shadow_sampled(table, rid):
            return
        ep = shadow.endpoint
        m, v = table.model_id, str(ep.version)
        if not self.breakers.allows((m, table.slice, ep.version)):
            self.metrics.inc(self.metrics.shadow_dropped, m, v, "shadow", "breaker")
            return
        verdict = await self._verdict(ep)
        if verdict is not None and not verdict.ok:
            self.metrics.inc(self.metrics.shadow_dropped, m, v, "shadow", "contract")
            return
        if llm:
            assert payload is not None
            url = openai_url(ep, route)
            body = json.dumps({**payload, "model": ep.backend_model}).encode()
        else:
            url = infer_url(ep)
        job = ShadowJob(
            request_id=rid,
            model_id=m,
            slice=table.slice,
            endpoint=ep,
            url=url,
            body=body,
            headers=headers,
            timeout_s=table.breaker.timeout_s,
            log_inputs=table.log_inputs,
        )
        if self.mirror.offer(job):
            self.metrics.inc(self.metrics.shadow_mirrored, m, v, "shadow")
        else:
            self.metrics.inc(self.metrics.shadow_dropped, m, v, "shadow", "queue_full")
            self._event_limited(
                "shadow_dropped",
                table,
                ep.version,
                reason="queue_full",
                queue_size=self.config.shadow_queue_size,
            )

    def _on_shadow_result(self, res: ShadowResult) -> None:
        """Runs in a shadow worker thread."""
        job = res.job
        table = self.store.lookup(job.model_id, job.slice)
        m, v = job.model_id, str(job.endpoint.version)
        if res.error is not None:
            self.metrics.inc(self.metrics.shadow_errors, m, v, "shadow", res.error)
        if table is not None:
            failed = res.error is not None and res.error != "bad_request"
            self.breakers.record(
                (m, job.slice, job.endpoint.version), "shadow", table.breaker, failed
            )
        hlen = res.headers.get("inference-header-content-length")
        self.recorder.put_threadsafe(
            _Pending(
                job.request_id,
                self.clock(),
                m,
                job.endpoint.version,
                "shadow",
                job.slice,
                None,
                None,
                table or _placeholder_table(m, job.slice),
                res.latency_ms,
                res.error,
                res.status,
                res.body,
                hlen,
                llm=job.endpoint.backend is BackendKind.vllm,
            )
        )

    # ------------------------------------------------------------------ OpenAI

    async def openai(self, request: Request, route: str) -> Response:
        """`POST /v1/completions` and `/v1/chat/completions` for LLM models."""
        t0 = time.perf_counter()
        req = _Req.from_scope(request.scope)
        rid = uuid.uuid4().hex
        table: RouteTable | None = None
        user: str | None = None
        try:
            rid = self._request_id(req)
            user, slice_ = self._identity(req)
            encoding = req.headers.get("content-encoding")
            if encoding is not None and encoding.strip().lower() not in ("", "identity"):
                raise _Refusal(
                    415, f"Content-Encoding {encoding!r} is not supported here; allowed: identity"
                )
            raw = await self._read_body(request)
            try:
                payload = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _Refusal(400, f"request body is not valid JSON: {exc}") from None
            except RecursionError:
                raise _Refusal(400, _TOO_DEEP) from None
            if _nests_deeper(payload, _MAX_JSON_DEPTH):
                raise _Refusal(400, _TOO_DEEP)
            if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
                raise _Refusal(400, "request body must be a JSON object with a 'model' string")
            if route == "chat/completions" and not isinstance(payload.get("messages"), list):
                raise _Refusal(400, "chat completions need a 'messages' list")
            if route == "completions" and "prompt" not in payload:
                raise _Refusal(400, "completions need a 'prompt'")
            model = payload["model"]
            if user is None and isinstance(payload.get("user"), str) and payload["user"]:
                user = payload["user"][:_MAX_ID_LEN]
            table = self._table(model, slice_)
            d = await self.decide(table, user)
            if d.endpoint.backend is not BackendKind.vllm and d.table.model_class != "llm":
                raise _Refusal(400, f"{model!r} is not an LLM; use /v2/models/{model}/infer")
        except _Refusal as r:
            return self._refusal_response(rid, r, table, user, t0).response()

        body = json.dumps({**payload, "model": d.endpoint.backend_model}).encode()
        url = openai_url(d.endpoint, route)
        fwd = {"content-type": "application/json"}
        headers = self._headers(rid, d)
        log_body = body if d.table.log_inputs else None
        if d.table.shadow is not None:
            await self._mirror(d.table, rid, raw, fwd, llm=True, payload=payload, route=route)
        if payload.get("stream") is True:
            return await self._stream(d, url, body, fwd, headers, rid, user, t0, log_body)
        status, rbody, rheaders, error = await self._post(d, url, body, fwd)
        if error is None or error == "bad_request":
            out_status = status or 502
            ctype = rheaders.get("content-type") if rheaders is not None else None
        else:
            out_status, rbody, extra = self._failure_answer(d, status, rbody, error)
            headers.update(extra)
            ctype = "application/json"
        elapsed = time.perf_counter() - t0
        self._count(d, out_status, error, elapsed)
        self._log(d, rid, user, elapsed, error, status, rbody, None, req_body=log_body, llm=True)
        return Response(rbody, status_code=out_status, headers=headers, media_type=ctype)

    async def _stream(
        self,
        d: _Decision,
        url: str,
        body: bytes,
        fwd: dict[str, str],
        headers: dict[str, str],
        rid: str,
        user: str | None,
        t0: float,
        log_body: bytes | None,
    ) -> Response:
        import httpx

        req = self.client.build_request("POST", url, content=body, headers=fwd)
        try:
            r = await self.client.send(req, stream=True)
        except httpx.TimeoutException:
            error: str | None = "timeout"
        except httpx.HTTPError:
            error = "unreachable"
        else:
            error = None
        if error is None and r.status_code >= 400:
            rbody = await r.aread()
            await r.aclose()
            error = (
                "not_loaded"
                if r.status_code == 404
                else ("backend_5xx" if r.status_code >= 500 else "bad_request")
            )
            status: int | None = r.status_code
        elif error is not None:
            rbody, status = b"", None
        if error is not None:
            if error == "bad_request":
                out_status = status or 400
            else:
                out_status, rbody, extra = self._failure_answer(d, status, rbody, error)
                headers.update(extra)
            elapsed = time.perf_counter() - t0
            self._count(d, out_status, error, elapsed)
            self._log(d, rid, user, elapsed, error, status, b"", None, req_body=log_body, llm=True)
            return Response(
                rbody, status_code=out_status, headers=headers, media_type="application/json"
            )

        async def chunks() -> AsyncIterator[bytes]:
            err: str | None = None
            tail = b""
            try:
                async for chunk in r.aiter_raw():
                    tail = (tail + chunk)[-4096:]
                    yield chunk
            except httpx.HTTPError:
                err = "stream_broken"
            finally:
                await r.aclose()
                elapsed = time.perf_counter() - t0
                self._count(d, r.status_code, err, elapsed)
                found = _PROMPT_TOKENS.findall(tail)
                self._log(
                    d,
                    rid,
                    user,
                    elapsed,
                    err,
                    r.status_code,
                    b"",
                    None,
                    req_body=log_body,
                    llm=True,
                    prompt_tokens=int(found[-1]) if found else None,
                )

        return StreamingResponse(
            chunks(),
            status_code=r.status_code,
            headers=headers,
            media_type=r.headers.get("content-type", "text/event-stream"),
        )

    # ------------------------------------------------------------------ metadata

    async def model_get(
        self, request: Request, model: str, suffix: str, version: str | None = None
    ) -> Response:
        """Model metadata, config or readiness, from the version this caller is routed to
        (or the version it names)."""
        import httpx

        req = _Req.from_scope(request.scope)
        rid = uuid.uuid4().hex
        try:
            rid = self._request_id(req)
            user, slice_ = self._identity(req)
            table = self._table(model, slice_)
            if version is None:
                d = await self.decide(table, user)
            else:
                d = await self.decide_pinned(table, version)
        except _Refusal as r:
            headers = {H_REQUEST_ID: rid, **r.headers}
            if suffix == "/ready" and r.status == 409:
                return Response(status_code=503, headers=headers)
            return _error_response(r.status, r.message, headers, **r.extra)
        ep = d.endpoint
        headers = self._headers(rid, d)
        if ep.backend is BackendKind.vllm:
            if suffix == "/ready":
                return Response(status_code=200, headers=headers)
            return JSONResponse(
                {"name": model, "versions": [str(ep.version)], "platform": "llm"}, headers=headers
            )
        url = f"{ep.url.rstrip('/')}/v2/models/{_quote(ep.backend_model)}{suffix}"
        try:
            r = await self.client.get(url, timeout=min(5.0, self.config.backend_timeout_s))
        except httpx.HTTPError:
            if suffix == "/ready":
                return Response(status_code=503, headers={**headers, **self._retry})
            return _error_response(
                503,
                f"the backend serving {model!r} v{ep.version} is unreachable",
                {**headers, **self._retry},
            )
        if suffix == "/ready":
            return Response(status_code=200 if r.status_code == 200 else 503, headers=headers)
        if r.status_code != 200:
            return _error_response(
                503,
                f"{model!r} v{ep.version} is not available on its backend",
                {**headers, **self._retry},
            )
        try:
            meta = r.json()
        except ValueError:
            return _error_response(502, "the backend answered with malformed JSON", headers)
        if isinstance(meta, dict):
            meta["name"] = model
            if suffix == "":
                meta["versions"] = [str(ep.version)]
        return JSONResponse(meta, headers=headers)


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _placeholder_table(model_id: str, slice_: str) -> RouteTable:
    """For a shadow answer that outlived its table: records need a salt, nothing else."""
    return RouteTable(model_id=model_id, slice=slice_, generation=0)


# ---------------------------------------------------------------------- the app


class OutcomeIn(BaseModel):
    """A label or click for an earlier prediction, joined by request id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=_MAX_ID_LEN)
    name: str = Field("label", min_length=1, max_length=64)
    value: float = Field(allow_inf_nan=False)
    ts: float | None = Field(None, ge=0, allow_inf_nan=False)


_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "shape": {"type": "array", "maxItems": 32, "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "data": {
            "type": "array",
            "items": {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"}]},
        },
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
        },
    },
}
_INFER_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": _TENSOR_SCHEMA},
                    "outputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}},
                        },
                    },
                },
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _openai_body(kind: str) -> dict[str, Any]:
    required = ["model", "messages"] if kind == "chat" else ["model", "prompt"]
    props: dict[str, Any] = {
        "model": {"type": "string"},
        "stream": {"type": "boolean"},
        "user": {"type": "string"},
        "max_tokens": {"type": "integer"},
    }
    if kind == "chat":
        props["messages"] = {"type": "array", "items": {"type": "object"}}
    else:
        props["prompt"] = {"type": "string"}
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": required, "properties": props}
            }
        },
    }


_ID_SCHEMA = {"type": "string", "maxLength": _MAX_ID_LEN}
_IDENTITY_PARAMS: list[dict[str, Any]] = [
    {"name": "x-user-id", "in": "header", "required": False, "schema": _ID_SCHEMA},
    {"name": "x-slice", "in": "header", "required": False, "schema": _ID_SCHEMA},
    {"name": "x-request-id", "in": "header", "required": False, "schema": _ID_SCHEMA},
    {"name": "user_id", "in": "query", "required": False, "schema": _ID_SCHEMA},
    {"name": "slice", "in": "query", "required": False, "schema": _ID_SCHEMA},
]
# A request naming its version is not assigned by user: no user id parameters.
_PINNED_PARAMS = [p for p in _IDENTITY_PARAMS if p["name"] not in ("x-user-id", "user_id")]

_R = dict[int | str, dict[str, Any]]
_SECURED: dict[str, Any] = {"security": [{"serviceToken": []}]}
_R401: dict[str, Any] = {"description": "missing or wrong bearer token; nothing changed"}
_PROXY_RESPONSES: _R = {
    200: {"description": "the backend's answer"},
    400: {"description": "malformed request"},
    404: {"description": "unknown model"},
    409: {"description": "the version's feature contract is broken (fail closed)"},
    413: {"description": "body too large"},
    502: {"description": "the backend failed"},
    503: {"description": "backend unavailable; see Retry-After"},
    504: {"description": "backend timeout; see Retry-After"},
}


def create_app(
    config: GatewayConfig,
    *,
    sink: PredictionSink,
    schema_source: FeatureSchemaSource | None,
    contracts: ContractResolver | None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """A gateway app; `app.state.gateway` is its Gateway. Background work runs in lifespan."""
    gw = Gateway(config, sink=sink, schema_source=schema_source, contracts=contracts, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = _GatewayApp(
        title="modelops gateway",
        version="0.1.0",
        description="KServe v2 and OpenAI-compatible traffic manager",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gw
    app.gateway = gw
    app.add_middleware(_BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(_Auth, token=gw.token)  # added last: runs first

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
        return _error_response(400, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    # -- KServe v2 -------------------------------------------------------------

    @app.get("/v2/health/live", tags=["kserve"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["kserve"], responses={503: {"description": "no routes"}})
    async def ready() -> Response:
        if len(gw.store) == 0:
            return _error_response(503, "no routing table yet", {"retry-after": "1"}, ready=False)
        return JSONResponse({"ready": True})

    @app.get("/v2", tags=["kserve"])
    async def server_metadata() -> dict[str, Any]:
        return {
            "name": "modelops-gateway",
            "version": "0.1.0",
            "extensions": ["binary_tensor_data", "parameters"],
        }

    meta_extra = {"parameters": _IDENTITY_PARAMS}

    @app.get(
        "/v2/models/{model}",
        tags=["kserve"],
        openapi_extra=meta_extra,
        responses={404: {"description": "unknown model"}},
    )
    async def model_metadata(model: str, request: Request) -> Response:
        return await gw.model_get(request, model, "")

    @app.get(
        "/v2/models/{model}/config",
        tags=["kserve"],
        openapi_extra=meta_extra,
        responses={404: {"description": "unknown model"}},
    )
    async def model_config_(model: str, request: Request) -> Response:
        return await gw.model_get(request, model, "/config")

    @app.get(
        "/v2/models/{model}/ready",
        tags=["kserve"],
        openapi_extra=meta_extra,
        responses={404: {"description": "unknown model"}, 503: {"description": "not ready"}},
    )
    async def model_ready(model: str, request: Request) -> Response:
        return await gw.model_get(request, model, "/ready")

    pinned_extra = {"parameters": _PINNED_PARAMS}
    for suffix, what in (("", "metadata"), ("/config", "config"), ("/ready", "readiness")):

        async def version_get(
            model: str, version: str, request: Request, suffix: str = suffix
        ) -> Response:
            return await gw.model_get(request, model, suffix, version)

        app.get(
            "/v2/models/{model}/versions/{version}" + suffix,
            tags=["kserve"],
            name=f"model_version_{what}",
            openapi_extra=pinned_extra,
            responses={404: {"description": "unknown model, or that version is not loaded"}},
        )(version_get)

    @app.post(
        "/v2/models/{model}/infer",
        tags=["kserve"],
        openapi_extra={"requestBody": _INFER_BODY, "parameters": _IDENTITY_PARAMS},
        responses=_PROXY_RESPONSES,
    )
    async def infer(model: str, request: Request) -> Response:
        # Served by the bare ASGI fast path (_GatewayApp); this route documents it and
        # answers only if the fast path is bypassed.
        t0 = time.perf_counter()
        req = _Req.from_scope(request.scope)
        body = await gw._read_body(request)
        answer = await gw.infer(model, req, body, t0)
        if answer.after is not None:
            await answer.after()
        return answer.response()

    @app.post(
        "/v2/models/{model}/versions/{version}/infer",
        tags=["kserve"],
        openapi_extra={"requestBody": _INFER_BODY, "parameters": _PINNED_PARAMS},
        responses={**_PROXY_RESPONSES, 404: {"description": "unknown model or version"}},
    )
    async def infer_version(model: str, version: str, request: Request) -> Response:
        # Served by the fast path too; this route documents it (arm "pinned").
        t0 = time.perf_counter()
        req = _Req.from_scope(request.scope)
        body = await gw._read_body(request)
        answer = await gw.infer(model, req, body, t0, version)
        return answer.response()

    # -- OpenAI ------------------------------------------------------------------

    @app.post(
        "/v1/completions",
        tags=["openai"],
        responses=_PROXY_RESPONSES,
        openapi_extra={"requestBody": _openai_body("completions"), "parameters": _IDENTITY_PARAMS},
    )
    async def completions(request: Request) -> Response:
        return await gw.openai(request, "completions")

    @app.post(
        "/v1/chat/completions",
        tags=["openai"],
        responses=_PROXY_RESPONSES,
        openapi_extra={"requestBody": _openai_body("chat"), "parameters": _IDENTITY_PARAMS},
    )
    async def chat_completions(request: Request) -> Response:
        return await gw.openai(request, "chat/completions")

    @app.post(
        "/v1/outcomes",
        status_code=202,
        tags=["log"],
        openapi_extra=_SECURED,
        responses={
            400: {"description": "invalid outcome"},
            401: _R401,
            404: {"description": "the request id was not served by this gateway process"},
            409: {"description": "an outcome of this name for this request was accepted"},
            503: {"description": "log queue full"},
        },
    )
    async def outcomes(outcome: OutcomeIn) -> Response:
        now = gw.clock()
        rid, name = outcome.request_id, outcome.name
        refused = gw.served.claim(rid, name, now)
        if refused == "unknown":
            return _error_response(
                404,
                f"request id {rid!r} was not served by this gateway process in the last "
                f"{gw.served.window_s:g} s (it remembers the newest {gw.served.max_ids}); "
                "outcomes are accepted only for requests the gateway served",
                request_id=rid,
            )
        if refused == "duplicate":
            return _error_response(
                409,
                f"an outcome {name!r} for request {rid!r} was already accepted; the first "
                "one counts",
                request_id=rid,
            )
        o = Outcome(
            request_id=rid,
            ts=outcome.ts if outcome.ts is not None else now,
            name=name,
            value=outcome.value,
        )
        if not gw.recorder.put(o):
            gw.served.unclaim(rid, name)
            return _error_response(503, "the prediction log is full", gw._retry)
        return JSONResponse({"accepted": True, "request_id": o.request_id}, status_code=202)

    # -- admin and metrics -----------------------------------------------------------

    @app.put(
        "/admin/routes",
        tags=["admin"],
        response_model=ApplyResult,
        openapi_extra=_SECURED,
        responses={400: {"description": "invalid snapshot"}, 401: _R401},
    )
    async def put_routes(snapshot: RoutingSnapshot) -> Response:
        try:
            result = await gw.apply(snapshot)
        except SpecError as exc:
            return _error_response(400, str(exc))
        return JSONResponse(result.model_dump(mode="json"))

    @app.get("/admin/routes", tags=["admin"], openapi_extra=_SECURED, responses={401: _R401})
    async def get_routes() -> dict[str, Any]:
        return {
            "tables": [t.model_dump(mode="json") for t in gw.store.tables()],
            "generations": gw.store.generations(),
        }

    @app.get("/admin/breakers", tags=["admin"], openapi_extra=_SECURED, responses={401: _R401})
    async def get_breakers() -> dict[str, Any]:
        return {"breakers": [s.model_dump(mode="json") for s in gw.breakers.states()]}

    @app.get("/admin/server", tags=["admin"], openapi_extra=_SECURED, responses={401: _R401})
    async def get_server() -> dict[str, Any]:
        from serving.gateway_server import CONNECTION_STATS

        return {
            "pid": os.getpid(),
            "connections": dict(CONNECTION_STATS),
            "schema_version": gw.guard.schema_version if gw.guard is not None else None,
            "shadow": {
                "queue_depth": gw.mirror.queue_depth(),
                "mirrored": gw.mirror.mirrored,
                "dropped": gw.mirror.dropped,
            },
            "records": {"submitted": gw.recorder.submitted, "dropped": gw.recorder.dropped},
        }

    @app.get("/metrics", tags=["admin"])
    async def metrics() -> Response:
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


# ---------------------------------------------------------------------- command line


def register_gateway(serve: Any) -> None:
    """Add `gateway` to the `modelops serve` subcommands (see serving.gateway_cli)."""
    from serving.gateway_cli import register

    register(serve)


def main(argv: list[str] | None = None) -> int:
    """Run the gateway command where the `modelops` CLI is not wired (see gateway_cli)."""
    from serving.gateway_cli import main as cli_main

    return cli_main(argv)
