"""The OpenAI completions API for LLM models, streamed or not."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from serving.gateway.asgi import Refusal, RequestView, nests_deeper
from serving.gateway.config import MAX_ID_LEN, GatewayConfig
from serving.gateway.route_choice import RouteChoice
from serving.gateway.shadow import openai_url
from serving.routing import BackendKind, RouteTable

__all__ = ["OpenAIRoutes"]

_MAX_JSON_DEPTH = 64  # OpenAI bodies: messages, content parts, tool schemas
_TOO_DEEP = f"request body is not valid JSON: it nests deeper than {_MAX_JSON_DEPTH} levels"
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')


class OpenAIRoutes:
    """`/v1/completions` and `/v1/chat/completions`: a part of `Gateway` for LLM models."""

    config: GatewayConfig
    client: Any

    async def openai(self, request: Request, route: str) -> Response:
        """`POST /v1/completions` and `/v1/chat/completions` for LLM models."""
        t0 = time.perf_counter()
        req = RequestView.from_scope(request.scope)
        rid = uuid.uuid4().hex
        table: RouteTable | None = None
        user: str | None = None
        try:
            rid = self._request_id(req)
            user, slice_ = self._identity(req)
            encoding = req.headers.get("content-encoding")
            if encoding is not None and encoding.strip().lower() not in ("", "identity"):
                raise Refusal(
                    415, f"Content-Encoding {encoding!r} is not supported here; allowed: identity"
                )
            raw = await self._read_body(request)
            try:
                payload = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise Refusal(400, f"request body is not valid JSON: {exc}") from None
            except RecursionError:
                raise Refusal(400, _TOO_DEEP) from None
            if nests_deeper(payload, _MAX_JSON_DEPTH):
                raise Refusal(400, _TOO_DEEP)
            if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
                raise Refusal(400, "request body must be a JSON object with a 'model' string")
            if route == "chat/completions" and not isinstance(payload.get("messages"), list):
                raise Refusal(400, "chat completions need a 'messages' list")
            if route == "completions" and "prompt" not in payload:
                raise Refusal(400, "completions need a 'prompt'")
            model = payload["model"]
            if user is None and isinstance(payload.get("user"), str) and payload["user"]:
                user = payload["user"][:MAX_ID_LEN]
            table = self._table(model, slice_)
            d = await self.decide(table, user)
            if d.endpoint.backend is not BackendKind.vllm and d.table.model_class != "llm":
                raise Refusal(400, f"{model!r} is not an LLM; use /v2/models/{model}/infer")
        except Refusal as r:
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
        d: RouteChoice,
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
