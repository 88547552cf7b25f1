"""The FastAPI app: the routes a gateway process serves and their OpenAPI document."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelops.contracts import FeatureSchemaSource
from modelops.errors import SpecError
from serving.gateway.asgi import BodyLimit, GatewayApp, RequestView, TokenAuth, error_response
from serving.gateway.config import MAX_ID_LEN, GatewayConfig
from serving.gateway.contracts import ContractResolver
from serving.gateway.kserve import DATATYPES
from serving.gateway.metrics import CONTENT_TYPE_LATEST
from serving.gateway.traffic import Gateway
from serving.records import Outcome, PredictionSink
from serving.routing import ApplyResult, RoutingSnapshot

__all__ = ["OutcomeIn", "create_app"]


class OutcomeIn(BaseModel):
    """A label or click for an earlier prediction, joined by request id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=MAX_ID_LEN)
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


_ID_SCHEMA = {"type": "string", "maxLength": MAX_ID_LEN}
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

    app = GatewayApp(
        title="modelops gateway",
        version="0.1.0",
        description="KServe v2 and OpenAI-compatible traffic manager",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gw
    app.gateway = gw
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(TokenAuth, token=gw.token)  # added last: runs first

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors()[:5]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg')}")
        return error_response(400, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    # -- KServe v2 -------------------------------------------------------------

    @app.get("/v2/health/live", tags=["kserve"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", tags=["kserve"], responses={503: {"description": "no routes"}})
    async def ready() -> Response:
        if len(gw.store) == 0:
            return error_response(503, "no routing table yet", {"retry-after": "1"}, ready=False)
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
        # Served by the bare ASGI fast path (GatewayApp); this route documents it and
        # answers only if the fast path is bypassed.
        t0 = time.perf_counter()
        req = RequestView.from_scope(request.scope)
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
        req = RequestView.from_scope(request.scope)
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
            return error_response(
                404,
                f"request id {rid!r} was not served by this gateway process in the last "
                f"{gw.served.window_s:g} s (it remembers the newest {gw.served.max_ids}); "
                "outcomes are accepted only for requests the gateway served",
                request_id=rid,
            )
        if refused == "duplicate":
            return error_response(
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
            return error_response(503, "the prediction log is full", gw._retry)
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
            return error_response(400, str(exc))
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
        from serving.gateway.server import CONNECTION_STATS

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
