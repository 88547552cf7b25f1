"""Circuit breakers for candidate versions (canary, A/B candidate, shadow).

A candidate that starts failing must leave rotation within one window, long before a sensor
tick could act. The breaker counts outcomes over a rolling window and opens once the window
holds enough requests and too many of them failed (an error, or an answer slower than the
policy's timeout), or as soon as a run of consecutive failures says the candidate crashed.
An open breaker stays open until the control plane publishes a newer routing table for that
(model, slice), or, if a cool-down is configured, until a half-open probe succeeds. Shadow
workers report from their own threads, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict

from serving.routing import BreakerPolicy

__all__ = ["BreakerKey", "BreakerState", "BreakerBoard"]

BreakerKey = tuple[str, str, int]  # (model_id, slice, version)


class BreakerState(BaseModel):
    """What `GET /admin/breakers` shows for one candidate version."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    slice: str
    version: int
    arm: str
    state: str  # closed | open | half_open
    requests: int
    failures: int
    error_rate: float
    opened_at: float | None = None  # unix seconds
    trips: int = 0


@dataclass
class _Window:
    arm: str
    events: deque[tuple[float, bool]] = field(default_factory=deque)
    failures: int = 0
    open_since: float | None = None  # monotonic
    opened_at: float | None = None  # wall clock, for display
    probing: bool = False
    trips: int = 0
    streak: int = 0  # consecutive failures, newest last


class BreakerBoard:
    """All breakers of one gateway process.

    `on_trip(key, state)` runs in whichever thread recorded the tripping outcome; it must be
    cheap and thread-safe (the gateway hands it to a thread-safe queue).
    """

    def __init__(
        self,
        *,
        on_trip: Callable[[BreakerKey, BreakerState], None] | None = None,
        on_close: Callable[[BreakerKey, BreakerState], None] | None = None,
        cooldown_s: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._windows: dict[BreakerKey, _Window] = {}
        self._open: set[BreakerKey] = set()  # read without the lock on the hot path
        self._on_trip = on_trip
        self._on_close = on_close
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._monotonic = monotonic

    def allows(self, key: BreakerKey) -> bool:
        """May a request go to this version? Open means no; half-open lets one probe through."""
        if key not in self._open:
            return True
        if self._cooldown_s is None:
            return False
        with self._lock:
            w = self._windows.get(key)
            if w is None or w.open_since is None:
                return True
            if w.probing or self._monotonic() - w.open_since < self._cooldown_s:
                return False
            w.probing = True  # exactly one request probes; its outcome decides
            return True

    def record(self, key: BreakerKey, arm: str, policy: BreakerPolicy, failed: bool) -> None:
        """Count one outcome; trips the breaker when the window's failure rate passes policy."""
        tripped: BreakerState | None = None
        closed: BreakerState | None = None
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Window(arm=arm)
            now = self._monotonic()
            if w.probing:
                w.probing = False
                if failed:
                    w.open_since = now  # stay open for another cool-down
                    return
                self._close(key, w)
                closed = self._state(key, w)
            if key in self._open:
                return
            w.events.append((now, failed))
            w.failures += failed
            w.streak = w.streak + 1 if failed else 0
            horizon = now - policy.window_s
            while w.events and w.events[0][0] < horizon:
                _, old = w.events.popleft()
                w.failures -= old
            n = len(w.events)
            crashed = 0 < policy.consecutive_failures <= w.streak
            if crashed or (n >= policy.min_requests and w.failures / n > policy.max_error_rate):
                w.open_since = now
                w.opened_at = self._clock()
                w.trips += 1
                self._open.add(key)
                tripped = self._state(key, w)
        if tripped is not None and self._on_trip is not None:
            self._on_trip(key, tripped)
        if closed is not None and self._on_close is not None:
            self._on_close(key, closed)

    def _close(self, key: BreakerKey, w: _Window) -> None:
        self._open.discard(key)
        w.open_since = None
        w.opened_at = None
        w.events.clear()
        w.failures = 0
        w.streak = 0

    def reset(self, model_id: str, slice_: str) -> list[BreakerKey]:
        """Forget every breaker of one table: the control plane published a newer one."""
        with self._lock:
            gone = [k for k in self._windows if k[0] == model_id and k[1] == slice_]
            for k in gone:
                del self._windows[k]
                self._open.discard(k)
        return gone

    def open_count(self) -> int:
        return len(self._open)

    def states(self) -> list[BreakerState]:
        with self._lock:
            return [self._state(k, w) for k, w in sorted(self._windows.items())]

    def _state(self, key: BreakerKey, w: _Window) -> BreakerState:
        n = len(w.events)
        if key in self._open:
            state = "half_open" if w.probing else "open"
        else:
            state = "closed"
        return BreakerState(
            model_id=key[0],
            slice=key[1],
            version=key[2],
            arm=w.arm,
            state=state,
            requests=n,
            failures=w.failures,
            error_rate=(w.failures / n) if n else 0.0,
            opened_at=w.opened_at,
            trips=w.trips,
        )
