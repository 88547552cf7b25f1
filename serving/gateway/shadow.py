"""Shadow traffic: live mirroring out of band, and log replay for jobs.

Live mirroring must never touch the user's request. The request path makes one O(1)
hand-off to a bounded queue and moves on; worker coroutines on the mirror's own thread and
event loop, with their own connection pool and their own timeout, send the copies. A hung
shadow backend therefore ties up only those workers: the queue fills, and further mirrors
are dropped and counted instead of queueing without bound. A separate loop keeps the
mirrors' I/O waits and callbacks off the loop that serves users.

Replay sends logged requests (inputs as logged, including point-in-time features) to a
shadow version and returns what it answered; a job calls it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict

from serving.gateway.backend_pool import BackendError, BackendPool, BackendTimeout
from serving.records import PredictionRecord
from serving.routing import BackendKind, Endpoint

__all__ = [
    "ShadowJob",
    "ShadowResult",
    "ShadowMirror",
    "ReplayResult",
    "replay",
    "infer_url",
    "openai_url",
]

log = logging.getLogger("modelops.gateway")


def infer_url(endpoint: Endpoint) -> str:
    """The KServe v2 inference URL of a version on its backend."""
    return f"{endpoint.url.rstrip('/')}/v2/models/{quote(endpoint.backend_model, safe='')}/infer"


def openai_url(endpoint: Endpoint, route: str) -> str:
    """`route` is `completions` or `chat/completions`; the endpoint URL may end in /v1."""
    base = endpoint.url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return f"{base}/{route}"


@dataclass(frozen=True)
class ShadowJob:
    """One mirror to send. `body` is the user's request bytes (OpenAI: model rewritten)."""

    request_id: str
    model_id: str
    slice: str
    endpoint: Endpoint
    url: str
    body: bytes
    headers: dict[str, str]
    timeout_s: float
    features: dict[str, Any] | None = None
    log_inputs: bool = False


@dataclass(frozen=True)
class ShadowResult:
    job: ShadowJob
    status: int | None
    latency_ms: float
    error: str | None
    body: bytes
    headers: dict[str, str]


class ShadowMirror:
    """A bounded queue feeding worker coroutines on the mirror's own thread and event loop.

    `offer` is called from the gateway's loop: a counter check under an uncontended lock and
    one `call_soon_threadsafe`. `on_result` runs on the mirror's thread.
    """

    def __init__(
        self,
        *,
        queue_size: int,
        workers: int,
        on_result: Callable[[ShadowResult], None],
        connect_timeout_s: float = 2.0,
    ) -> None:
        self._max = queue_size
        self._n = workers
        self._on_result = on_result
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._pending = 0  # offered and not yet taken by a worker
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[ShadowJob] | None = None
        self._pool: BackendPool | None = None
        self._thread: threading.Thread | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.mirrored = 0
        self.dropped = 0
        self.in_flight = 0

    def offer(self, job: ShadowJob) -> bool:
        """O(1) and never blocks: False when the queue is full (the mirror is dropped)."""
        loop, q = self._loop, self._queue
        with self._lock:
            if loop is None or q is None or self._pending >= self._max:
                self.dropped += 1
                return False
            self._pending += 1
        try:
            loop.call_soon_threadsafe(q.put_nowait, job)
        except RuntimeError:  # the mirror loop is gone (shutting down)
            with self._lock:
                self._pending -= 1
                self.dropped += 1
            return False
        self.mirrored += 1
        return True

    def queue_depth(self) -> int:
        return self._pending

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="gateway-shadow", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the shadow mirror thread did not start")

    def _run(self, ready: threading.Event) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._queue = asyncio.Queue()
        self._pool = BackendPool(connect_timeout_s=self._connect_timeout_s)
        self._workers = [loop.create_task(self._work()) for _ in range(self._n)]
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers; mirrors still queued or in flight are abandoned."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = None

        async def shutdown() -> None:
            for w in self._workers:
                w.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            if self._pool is not None:
                await self._pool.aclose()
            asyncio.get_running_loop().stop()

        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(shutdown()))
        thread.join(timeout)
        self._thread = None

    async def _work(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            with self._lock:
                self._pending -= 1
            self.in_flight += 1
            try:
                result = await self._send(job)
            finally:
                self.in_flight -= 1
            try:
                self._on_result(result)
            except Exception:  # noqa: BLE001 - a logging bug must not kill the worker
                log.exception("shadow result handler failed")

    async def _send(self, job: ShadowJob) -> ShadowResult:
        assert self._pool is not None
        t0 = time.perf_counter()
        try:
            r = await self._pool.post(job.url, job.body, job.headers, job.timeout_s)
        except BackendTimeout:
            return ShadowResult(job, None, _ms(t0), "timeout", b"", {})
        except BackendError:
            return ShadowResult(job, None, _ms(t0), "unreachable", b"", {})
        latency = _ms(t0)
        error = _status_error(r.status)
        if error is None and latency > job.timeout_s * 1000:
            error = "timeout"
        return ShadowResult(job, r.status, latency, error, r.body, r.headers)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def _status_error(status: int) -> str | None:
    if status < 400:
        return None
    if status >= 500:
        return "backend_5xx"
    return "bad_request"


# ---------------------------------------------------------------------- replay


class ReplayResult(BaseModel):
    """What the shadow version answered to one logged request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    version: int
    status: int | None
    latency_ms: float
    error: str | None = None
    outputs: dict[str, Any] | None = None
    features: dict[str, Any] | None = None


def _replay_request(record: PredictionRecord, endpoint: Endpoint) -> tuple[str, bytes]:
    if record.inputs is None:
        raise ValueError(f"record {record.request_id} has no logged inputs to replay")
    payload = dict(record.inputs)
    if endpoint.backend is BackendKind.vllm:
        payload["model"] = endpoint.backend_model
        payload["stream"] = False
        route = "chat/completions" if "messages" in payload else "completions"
        return openai_url(endpoint, route), json.dumps(payload).encode()
    return infer_url(endpoint), json.dumps(payload).encode()


def replay(
    records: Iterable[PredictionRecord],
    endpoint: Endpoint,
    *,
    timeout_s: float = 10.0,
    concurrency: int = 4,
    sink: Any | None = None,
    clock: Callable[[], float] = time.time,
) -> list[ReplayResult]:
    """Replay logged requests through `endpoint` and return its answers, in input order.

    Each record must carry logged `inputs`: the gateway logs them, as a plain JSON request
    with every tensor inline, for models whose policy sets `log_inputs`. Those are the
    point-in-time feature values prod saw (also kept by name in `features`), so the shadow
    answers what prod answered, not today's features. A record without inputs comes back
    with an error instead of failing the whole replay. With a `sink`, each answer is also
    logged (from the calling thread) as a PredictionRecord with arm "shadow" under the
    original request id, so it joins the prod record.
    """
    import httpx

    from serving.gateway.kserve import response_outputs

    items = list(records)
    results: list[ReplayResult | None] = [None] * len(items)
    with httpx.Client(
        timeout=timeout_s,
        headers={"accept-encoding": "identity"},
        limits=httpx.Limits(max_connections=max(1, concurrency)),
    ) as client:

        def one(i: int) -> None:
            rec = items[i]
            try:
                url, body = _replay_request(rec, endpoint)
            except ValueError as exc:
                results[i] = ReplayResult(
                    request_id=rec.request_id,
                    version=endpoint.version,
                    status=None,
                    latency_ms=0.0,
                    error=f"not_replayable: {exc}",
                    features=rec.features,
                )
                return
            t0 = time.perf_counter()
            status: int | None = None
            outputs = None
            try:
                r = client.post(url, content=body, headers={"content-type": "application/json"})
                status = r.status_code
                error = _status_error(r.status_code)
                outputs = response_outputs(
                    r.content, r.headers.get("inference-header-content-length")
                )
            except httpx.TimeoutException:
                error = "timeout"
            except httpx.HTTPError:
                error = "unreachable"
            res = ReplayResult(
                request_id=rec.request_id,
                version=endpoint.version,
                status=status,
                latency_ms=_ms(t0),
                error=error,
                outputs=outputs,
                features=rec.features,
            )
            results[i] = res

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(one, range(len(items))))
    done = [r for r in results if r is not None]
    if sink is not None:
        for rec, res in zip(items, done, strict=True):
            if res.status is None and res.error and res.error.startswith("not_replayable"):
                continue
            sink.submit(
                PredictionRecord(
                    request_id=rec.request_id,
                    ts=clock(),
                    model_id=rec.model_id,
                    version=endpoint.version,
                    arm="shadow",
                    slice=rec.slice,
                    user_bucket=rec.user_bucket,
                    latency_ms=res.latency_ms,
                    error=res.error,
                    outputs=res.outputs,
                    features=rec.features,
                )
            )
    return done
