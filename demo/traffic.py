"""The traffic simulator: sticky users, known true click rates, and a regression switch.

Users (fixed `x-user-id`s, so the gateway's hash keeps each on one arm) send KServe v2
inference requests for features drawn like the dataset. The response's
`x-modelops-version` says which version served; the user then clicks with that version's
*true* rate, known here and nowhere else, and the outcome is posted to `/v1/outcomes`
joined by request id. `regress(model, version)` makes a candidate's true rate collapse,
which only the online-metrics sensor can discover, from the prediction log.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Served", "TrafficSim", "BASE_RATE"]

BASE_RATE = 0.30


@dataclass(frozen=True)
class Served:
    """One request's fate, kept for the "is all traffic back on prod?" questions."""

    ts: float
    model: str
    version: int | None
    arm: str | None
    ok: bool


class TrafficSim:
    """Background workers sending inference + outcome pairs through one gateway."""

    def __init__(
        self,
        gateway_url: str,
        models: list[str],
        *,
        users: int = 5000,
        workers: int = 4,
        rate_per_s: float = 120.0,
        seed: int = 0,
        base_rate: float = BASE_RATE,
        uplift: float = 0.01,
        slice_: str = "global",
        history: int = 200_000,
        token: str | None = None,
    ) -> None:
        from modelops.service_token import auth_header, service_token

        self.url = gateway_url.rstrip("/")
        # Outcome posts are authenticated: the gateway's token (the stack's, or this home's).
        self._auth = auth_header(token if token is not None else service_token())
        self.models = list(models)
        self.users = [f"user-{i:05d}" for i in range(users)]
        self.workers = workers
        self.rate_per_s = rate_per_s
        self.base_rate = base_rate
        self.uplift = uplift
        self.slice = slice_
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._regressed: dict[tuple[str, int], float] = {}
        self._mix: dict[str, float] = dict.fromkeys(self.models, 1.0)
        self.served: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.outcome_errors = 0
        self.first_bad_ts: dict[tuple[str, int], float] = {}
        self.log: deque[Served] = deque(maxlen=history)

    # -- the world's truth -------------------------------------------------------------

    def true_rate(self, model: str, version: int) -> float:
        """Later versions click a little better, unless regressed."""
        with self._lock:
            bad = self._regressed.get((model, version))
        if bad is not None:
            return bad
        return min(0.9, self.base_rate + self.uplift * (version - 1))

    def regress(self, model: str, version: int, rate: float = 0.03) -> None:
        """From now on, users served by (model, version) click at `rate`."""
        with self._lock:
            self._regressed[(model, version)] = rate

    def set_mix(self, weights: dict[str, float]) -> None:
        """Relative request share per model (0 stops a model's traffic)."""
        with self._lock:
            self._mix = {m: float(weights.get(m, 0.0)) for m in self.models}

    # -- observations ------------------------------------------------------------------

    def counts(self, model: str) -> dict[int, int]:
        with self._lock:
            return {v: n for (m, v), n in self.served.items() if m == model}

    def window(self, model: str, since_ts: float) -> tuple[Counter[int], int]:
        """(served per version, errors) for `model` since `since_ts`."""
        with self._lock:
            recent = [s for s in self.log if s.model == model and s.ts >= since_ts]
        versions: Counter[int] = Counter(s.version for s in recent if s.ok and s.version)
        return versions, sum(1 for s in recent if not s.ok)

    def all_on(self, model: str, version: int, since_ts: float, min_requests: int = 20) -> bool:
        """Every response for `model` after its last stray one (another version, or an
        error) since `since_ts` came from `version`, and there are `min_requests` of them."""
        with self._lock:
            recent = [s for s in self.log if s.model == model and s.ts >= since_ts]
        stray = [i for i, s in enumerate(recent) if not s.ok or s.version != version]
        clean = recent[stray[-1] + 1 :] if stray else recent
        return len(clean) >= min_requests

    # -- the workers -------------------------------------------------------------------

    def start(self) -> TrafficSim:
        self._stop.clear()
        for i in range(self.workers):
            t = threading.Thread(target=self._run, args=(i,), name=f"traffic-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self._threads.clear()

    def __enter__(self) -> TrafficSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _pick(self, rng: np.random.Generator) -> str | None:
        with self._lock:
            mix = [(m, w) for m, w in self._mix.items() if w > 0]
        if not mix:
            return None
        weights = np.array([w for _, w in mix])
        return mix[int(rng.choice(len(mix), p=weights / weights.sum()))][0]

    def _run(self, idx: int) -> None:
        import httpx

        from demo.data import COUNTRIES, COUNTRY_SHARE, N_FEATURES

        rng = np.random.default_rng(int(self._rng.integers(2**31)) + idx)
        interval = self.workers / self.rate_per_s if self.rate_per_s > 0 else 0.0
        with httpx.Client(timeout=5.0) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                model = self._pick(rng)
                if model is None:
                    self._stop.wait(0.1)
                    continue
                user = self.users[int(rng.integers(len(self.users)))]
                rng.choice(COUNTRIES, p=COUNTRY_SHARE)  # drawn like the dataset's rows
                x = rng.normal(size=N_FEATURES).astype(np.float32)
                self._one(client, rng, model, user, x)
                if interval:
                    next_at += interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        self._stop.wait(delay)
                    else:
                        next_at = time.monotonic()

    def _one(
        self, client: Any, rng: np.random.Generator, model: str, user: str, x: np.ndarray
    ) -> None:
        rid = uuid.uuid4().hex
        body = {
            "inputs": [
                {"name": "features", "shape": [1, len(x)], "datatype": "FP32", "data": x.tolist()}
            ]
        }
        headers = {"x-user-id": user, "x-slice": self.slice, "x-request-id": rid}
        try:
            r = client.post(f"{self.url}/v2/models/{model}/infer", json=body, headers=headers)
        except Exception:  # noqa: BLE001 - a refused connection is an error to count
            self._record(model, None, None, ok=False, kind="connect")
            return
        version_h = r.headers.get("x-modelops-version")
        version = int(version_h) if version_h and version_h.isdigit() else None
        arm = r.headers.get("x-modelops-arm")
        if r.status_code != 200 or version is None:
            self._record(model, version, arm, ok=False, kind=str(r.status_code))
            return
        self._record(model, version, arm, ok=True)
        click = float(rng.random() < self.true_rate(model, version))
        try:
            o = client.post(
                f"{self.url}/v1/outcomes",
                json={"request_id": rid, "name": "click", "value": click},
                headers=self._auth,
            )
            if o.status_code != 202:
                self.outcome_errors += 1
        except Exception:  # noqa: BLE001
            self.outcome_errors += 1

    def _record(
        self, model: str, version: int | None, arm: str | None, *, ok: bool, kind: str = ""
    ) -> None:
        now = time.time()
        with self._lock:
            self.log.append(Served(now, model, version, arm, ok))
            if ok and version is not None:
                self.served[(model, version)] += 1
                key = (model, version)
                if key in self._regressed and key not in self.first_bad_ts:
                    self.first_bad_ts[key] = now
            else:
                self.errors[f"{model}:{kind}"] += 1
