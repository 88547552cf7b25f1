"""Records, outcomes and events leave the request path here, and outcomes are checked
against the requests this process served."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from serving.gateway.kserve import decode_infer_request, response_outputs
from serving.gateway.metrics import GatewayMetrics
from serving.predlog.userhash import hash_user, resolve_user_salt
from serving.records import Outcome, PredictionRecord, PredictionSink
from serving.routing import RouteTable, bucket

__all__ = ["PendingRecord", "RecordQueue", "ServedIds", "layer_salt"]

log = logging.getLogger("modelops.gateway")


@dataclass(slots=True)
class PendingRecord:
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
    segment: str | None = None

    def build(self, user_salt: bytes | None = None) -> PredictionRecord:
        """The record, with the user key as its keyed hash (`user_salt`; no salt, no hash):
        the raw user id never leaves this object."""
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
            ub = bucket(layer_salt(self.table), self.user_id)
        uh = None
        if self.user_id is not None and user_salt is not None:
            uh = hash_user(self.user_id, user_salt)
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
            user_hash=uh,
            segment=self.segment,
            latency_ms=self.latency_ms,
            error=self.error,
            outputs=outputs,
            inputs=inputs if isinstance(inputs, dict) else None,
            features=features,
            prompt_tokens=prompt_tokens,
        )


def layer_salt(table: RouteTable) -> str:
    """The salt `assign` used for this table's active layer: buckets line up with arms."""
    if table.ab_test is not None:
        return f"ab:{table.ab_test.layer}"
    return f"canary:{table.model_id}:{table.slice}"


class RecordQueue:
    """Moves records to the sink off the request path.

    The request path appends a small tuple to a deque (O(1)); a task on the loop builds the
    PredictionRecords and submits them in batches. Shadow worker threads append too (deque
    appends are thread-safe) and wake the task through the loop.
    """

    def __init__(
        self,
        sink: PredictionSink,
        metrics: GatewayMetrics,
        max_items: int,
        user_salt: str | bytes | None = None,
    ) -> None:
        """`user_salt`: what user keys are hashed with before they reach the sink; None
        resolves it on the first record that has a user (serving.predlog.userhash)."""
        self._sink = sink
        self._user_salt = None if user_salt is None else resolve_user_salt(user_salt)
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
            if isinstance(item, PendingRecord):
                salt = self._user_salt
                if salt is None and item.user_id is not None:
                    salt = self._user_salt = resolve_user_salt()
                ok = self._sink.submit(item.build(salt))
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


class ServedIds:
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
