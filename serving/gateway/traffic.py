"""The core `Gateway`: one process's routes, breakers, contract verdicts, mirrors and log."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from modelops.contracts import FeatureSchemaSource
from modelops.errors import SpecError
from modelops.service_token import auth_header, check_token, service_token
from serving.gateway.asgi import (
    Answer,
    Refusal,
    RequestView,
    decode_body,
    drain_body,
    error_body,
    error_response,
)
from serving.gateway.backend_pool import BackendError, BackendPool, BackendTimeout
from serving.gateway.breaker import BreakerBoard, BreakerKey, BreakerState
from serving.gateway.config import (
    CANDIDATE_ARMS,
    H_ARM,
    H_FALLBACK,
    H_REQUEST_ID,
    H_VERSION,
    MAX_ID_LEN,
    PINNED,
    GatewayConfig,
)
from serving.gateway.contracts import ContractGuard, ContractResolver
from serving.gateway.kserve import BadRequest, parse_infer_header, rename_response
from serving.gateway.metrics import GatewayMetrics
from serving.gateway.openai_routes import OpenAIRoutes
from serving.gateway.recorder import PendingRecord, RecordQueue, ServedIds
from serving.gateway.route_choice import RouteChoice, RouteChooser
from serving.gateway.route_store import RouteStore, endpoints_of
from serving.gateway.shadow import ShadowJob, ShadowMirror, ShadowResult, infer_url, openai_url
from serving.records import GatewayEvent, PredictionSink
from serving.routing import ApplyResult, BackendKind, RouteTable, RoutingSnapshot, shadow_sampled

__all__ = ["H_SEGMENT", "Gateway", "request_segment"]

log = logging.getLogger("modelops.gateway")

H_SEGMENT = "x-modelops-segment"
SEGMENT_MAX_LEN = 64
_SEGMENT = re.compile(rf"[A-Za-z0-9_.:-]{{1,{SEGMENT_MAX_LEN}}}")


def request_segment(headers: dict[str, str]) -> str | None:
    """The request's data slice (`x-modelops-segment`) for the protected-slice harm tests.

    A short token (1-64 letters, digits, `_ - . :`) so a client cannot flood the log's segment
    index with free text; absent or empty is no segment, and costs one dict lookup."""
    seg = headers.get(H_SEGMENT)
    if not seg:
        return None
    if _SEGMENT.fullmatch(seg) is None:
        raise Refusal(
            400,
            f"{H_SEGMENT} must be 1-{SEGMENT_MAX_LEN} characters of letters, digits, "
            "'_', '-', '.' or ':'",
        )
    return seg


# ---------------------------------------------------------------------- the gateway


class Gateway(RouteChooser, OpenAIRoutes):
    """The state of one gateway process: routes, breakers, contract verdicts, mirrors, log.

    Which version a request goes to is `RouteChooser`'s (route_choice); the OpenAI API is
    `OpenAIRoutes`' (openai_routes); the KServe hot path, shadow mirroring and records are here.
    """

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
        self.recorder = RecordQueue(sink, self.metrics, config.record_queue_size)
        self.served = ServedIds(config.outcome_max_ids, config.outcome_window_s)
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

    def _headers(self, rid: str, d: RouteChoice) -> dict[str, str]:
        h = {H_REQUEST_ID: rid, H_VERSION: str(d.endpoint.version), H_ARM: d.arm}
        if d.fallback is not None:
            h[H_FALLBACK] = d.fallback
        return h

    def _log(
        self,
        d: RouteChoice,
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
            PendingRecord(
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
        r: Refusal,
        table: RouteTable | None,
        user: str | None,
        t0: float,
    ) -> Answer:
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
            d = RouteChoice(table, r.arm or "prod", r.endpoint, None, None)
            self._log(d, rid, user, elapsed, r.error, r.status)
        return Answer(r.status, headers, error_body(r.message, **r.extra), "application/json")

    # ------------------------------------------------------------------ forwarding

    async def _post(
        self, d: RouteChoice, url: str, body: bytes, headers: dict[str, str]
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
        self, d: RouteChoice, status: int | None, body: bytes, error: str
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

    def _count(self, d: RouteChoice, status: int, error: str | None, latency_s: float) -> None:
        m, v = d.table.model_id, str(d.endpoint.version)
        self.metrics.observe(m, v, d.arm, status, latency_s)
        if error is not None:
            self.metrics.inc(self.metrics.errors, m, v, d.arm, error)
        if d.arm in CANDIDATE_ARMS:
            failed = error in ("timeout", "unreachable", "not_loaded", "backend_5xx") or (
                latency_s > d.table.breaker.timeout_s
            )
            self.breakers.record(
                (m, d.table.slice, d.endpoint.version), d.arm, d.table.breaker, failed
            )

    async def _read_body(self, request: Request) -> bytes:
        return await request.body()  # BodyLimit has enforced max_body_bytes already

    async def asgi_infer(
        self, model: str, scope: Any, receive: Any, send: Any, version: str | None = None
    ) -> None:
        """The hot path as a bare ASGI handler: no framework routing, no Request objects."""
        req = RequestView.from_scope(scope)
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
                    raise Refusal(400, "Content-Length must be a non-negative integer")
                drained = await drain_body(receive, int(length))
                raise Refusal(413, too_large)
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
                    drained = not more or await drain_body(receive, None)
                    raise Refusal(413, too_large)
                chunks.append(chunk)
                if not more:
                    break
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except Refusal as r:
            rid = req.headers.get(H_REQUEST_ID) or uuid.uuid4().hex
            answer = self._refusal_response(rid[:MAX_ID_LEN], r, None, None, t0)
            await answer.send(send, close=not drained)
            return
        answer = await self.infer(model, req, body, t0, version)
        await answer.send(send)
        if answer.after is not None:  # mirror once the user has the answer
            await answer.after()

    async def infer(
        self, model: str, req: RequestView, body: bytes, t0: float, version: str | None = None
    ) -> Answer:
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
            segment = request_segment(h)
            table = self._table(model, slice_)
            hlen = h.get("inference-header-content-length")
            encoding = h.get("content-encoding")
            if encoding is not None and encoding.strip().lower() not in ("", "identity"):
                # Decoded here, so the body is checked like any other and the backend gets
                # plain bytes; a bomb stops at max_body_bytes.
                body = await decode_body(body, encoding, self.config.max_body_bytes)
            header: dict[str, Any] | None = None
            header_size = 0
            try:
                header, header_size = parse_infer_header(body, hlen)
            except BadRequest as exc:
                raise Refusal(400, str(exc)) from None
            if version is None:
                d = await self.decide(table, user)
            else:
                d = await self.decide_pinned(table, version)
            if d.endpoint.backend is BackendKind.vllm:
                raise Refusal(
                    400,
                    f"{model!r} is an LLM; use /v1/completions or /v1/chat/completions",
                )
        except Refusal as r:
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
            segment=segment,
        )
        answer = Answer(out_status, headers, rbody, ctype)
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
            PendingRecord(
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

    # ------------------------------------------------------------------ metadata

    async def model_get(
        self, request: Request, model: str, suffix: str, version: str | None = None
    ) -> Response:
        """Model metadata, config or readiness, from the version this caller is routed to
        (or the version it names)."""
        import httpx

        req = RequestView.from_scope(request.scope)
        rid = uuid.uuid4().hex
        try:
            rid = self._request_id(req)
            user, slice_ = self._identity(req)
            table = self._table(model, slice_)
            if version is None:
                d = await self.decide(table, user)
            else:
                d = await self.decide_pinned(table, version)
        except Refusal as r:
            headers = {H_REQUEST_ID: rid, **r.headers}
            if suffix == "/ready" and r.status == 409:
                return Response(status_code=503, headers=headers)
            return error_response(r.status, r.message, headers, **r.extra)
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
            return error_response(
                503,
                f"the backend serving {model!r} v{ep.version} is unreachable",
                {**headers, **self._retry},
            )
        if suffix == "/ready":
            return Response(status_code=200 if r.status_code == 200 else 503, headers=headers)
        if r.status_code != 200:
            return error_response(
                503,
                f"{model!r} v{ep.version} is not available on its backend",
                {**headers, **self._retry},
            )
        try:
            meta = r.json()
        except ValueError:
            return error_response(502, "the backend answered with malformed JSON", headers)
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
