"""The traffic simulator: sticky users, known true click rates, and switches for the truth.

Users (fixed `x-user-id`s, so the gateway's hash keeps each on one arm) send KServe v2
inference requests for features drawn like the dataset. The response's
`x-modelops-version` says which version served; the user then clicks with that version's
*true* rate, known here and nowhere else, and the outcome is posted to `/v1/outcomes`
joined by request id.

The world. Clicks follow the dataset's own generator (`demo.data`): a request with features
x from a country c clicks with probability sigmoid(score(x) + offset(c)), about 0.33 on
average, so a model that learned the data is calibrated on live traffic too. On top, each
user has a propensity factor of their own, w ~ Gamma(k, 1/k) (mean 1), so a user's requests
are correlated, which is why the sensors count users and not requests. A version multiplies
both by its effect: by default a refresh is a little better (+3% per version);
`set_effect(model, version, -0.15)` makes every user of that version click 15% less, and
`regress(model, version, rate)` sets its mean rate outright. Only the online-metrics sensor
can discover either, from the prediction log. `lose_canary_users(model, version, fraction)`
makes that fraction of the users the gateway sends to the version's canary never arrive
(their client breaks before the request), the fault a sample-ratio-mismatch check exists
for; `shift_features(model, shifts)` moves the inputs of a model's traffic (a campaign
brings other users), which only the drift sensor can see.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Served", "TrafficSim", "BASE_RATE", "USER_SPREAD", "mean_click_rate"]

BASE_RATE = 0.30  # the old constant rate; the world's mean rate is measured (mean_click_rate)
USER_SPREAD = 20.0  # k of the per-user factor Gamma(k, 1/k): sd 1/sqrt(k), about 0.22


def mean_click_rate(n: int = 200_000, seed: int = 12345) -> float:
    """The data generator's mean click probability over features and countries (seeded)."""
    from demo.data import COUNTRIES, COUNTRY_OFFSET, COUNTRY_SHARE, N_FEATURES, ctr_score

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    c = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_SHARE)
    off = np.array([COUNTRY_OFFSET[k] for k in COUNTRIES])[c]
    return float(np.mean(1.0 / (1.0 + np.exp(-(ctr_score(x) + off)))))


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
        users: int = 20000,
        workers: int = 16,
        rate_per_s: float = 120.0,
        seed: int = 0,
        base_rate: float | None = None,
        uplift: float = 0.03,
        slice_: str = "global",
        history: int = 200_000,
        token: str | None = None,
        user_spread: float = USER_SPREAD,
    ) -> None:
        from modelops.service_token import auth_header, service_token

        self.url = gateway_url.rstrip("/")
        # Outcome posts are authenticated: the gateway's token (the stack's, or this home's).
        self._auth = auth_header(token if token is not None else service_token())
        self.models = list(models)
        self.users = [f"user-{i:05d}" for i in range(users)]
        self.workers = workers
        self.rate_per_s = rate_per_s
        self.base_rate = mean_click_rate() if base_rate is None else base_rate
        self.uplift = uplift
        self.slice = slice_
        self._rng = np.random.default_rng(seed)
        # Each user's own click propensity factor (mean 1): the world's heterogeneity.
        self._factor = self._rng.gamma(user_spread, 1.0 / user_spread, size=users)
        # Each user's country, drawn like the dataset's rows: sent as the request's segment
        # (`x-modelops-segment`), so the protected-slice tests see live slices.
        from demo.data import COUNTRIES, COUNTRY_SHARE

        self._country = [
            COUNTRIES[i] for i in self._rng.choice(len(COUNTRIES), size=users, p=COUNTRY_SHARE)
        ]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._regressed: dict[tuple[str, int], float] = {}
        self._effects: dict[tuple[str, int], float] = {}
        self._lost: dict[tuple[str, int], float] = {}  # (model, version) -> fraction lost
        self._canary: dict[str, tuple[int, float]] = {}  # model -> (version, percent)
        self._shift: dict[str, dict[int, float]] = {}  # model -> {feature index: shift}
        self.lost_requests: Counter[tuple[str, int]] = Counter()
        self._mix: dict[str, float] = dict.fromkeys(self.models, 1.0)
        self.boosted: set[str] = set()  # models the demo weights 3x (read by its mix hook)
        self.served: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.outcome_errors = 0
        self.first_bad_ts: dict[tuple[str, int], float] = {}
        self.log: deque[Served] = deque(maxlen=history)

    # -- the world's truth -------------------------------------------------------------

    def true_rate(self, model: str, version: int) -> float:
        """The version's mean click rate over users and requests: a refresh is a little
        better (relative `uplift` per version), unless the scenario set an effect (relative
        to the base rate) or a regression."""
        with self._lock:
            bad = self._regressed.get((model, version))
            effect = self._effects.get((model, version))
        if bad is not None:
            return bad
        if effect is None:
            effect = self.uplift * (version - 1)
        return min(0.9, self.base_rate * (1.0 + effect))

    def click_probability(self, model: str, version: int, user_index: int, p_x: float) -> float:
        """One request's click probability: the data's own p(x), the user's factor, the
        version's effect."""
        factor = self.true_rate(model, version) / self.base_rate
        return min(0.99, p_x * float(self._factor[user_index]) * factor)

    def regress(self, model: str, version: int, rate: float = 0.03) -> None:
        """From now on, users served by (model, version) click at `rate`."""
        with self._lock:
            self._regressed[(model, version)] = rate

    def set_effect(self, model: str, version: int, relative: float) -> None:
        """Users served by (model, version) click at base rate x (1 + relative)."""
        if not -1.0 < relative < 2.0:
            raise ValueError(f"relative effect {relative} is not allowed; use -1 < it < 2")
        with self._lock:
            self._effects[(model, version)] = relative

    def lose_canary_users(self, model: str, version: int, fraction: float) -> None:
        """`fraction` of the users routed to (model, version)'s canary never arrive."""
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction {fraction} is not allowed; use 0 <= it < 1")
        with self._lock:
            self._lost[(model, version)] = fraction

    def set_canary(self, model: str, version: int | None, percent: float | None) -> None:
        """What the gateway's table says about the model's canary (the demo keeps it
        current), so lost users are exactly those the gateway would route to it."""
        with self._lock:
            if version is None or not percent:
                self._canary.pop(model, None)
            else:
                self._canary[model] = (version, float(percent))

    def shift_features(self, model: str, shifts: dict[int, float]) -> None:
        """From now on, `model`'s requests carry feature i shifted by shifts[i] (the world's
        click model is unchanged: only the inputs moved)."""
        with self._lock:
            self._shift[model] = {int(k): float(v) for k, v in shifts.items()}

    def achieved_rate(self, seconds: float = 10.0) -> float:
        """Requests answered per second over the last `seconds`."""
        now = time.time()
        with self._lock:
            n = sum(1 for s in reversed(self.log) if s.ts >= now - seconds)
        return n / seconds

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
        """One thread with an event loop; `workers` concurrent request loops in it, each
        paced at rate / workers (asynchronous: far less client CPU per request than
        threads, on a machine whose cores the gateway and Triton need)."""
        self._stop.clear()
        t = threading.Thread(target=self._loop_main, name="traffic", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
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

    def _loop_main(self) -> None:
        import asyncio

        asyncio.run(self._main())

    async def _main(self) -> None:
        import asyncio

        import aiohttp

        conn = aiohttp.TCPConnector(limit=self.workers * 2)
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            seeds = [int(self._rng.integers(2**31)) + i for i in range(self.workers)]
            await asyncio.gather(*(self._worker(session, seed) for seed in seeds))

    async def _worker(self, session: Any, seed: int) -> None:
        import asyncio

        from demo.data import COUNTRY_OFFSET, N_FEATURES, ctr_score

        rng = np.random.default_rng(seed)
        interval = self.workers / self.rate_per_s if self.rate_per_s > 0 else 0.0
        next_at = time.monotonic()
        while not self._stop.is_set():
            model = self._pick(rng)
            if model is None:
                await asyncio.sleep(0.1)
                continue
            ui = int(rng.integers(len(self.users)))
            country = self._country[ui]
            x = rng.normal(size=N_FEATURES).astype(np.float32)
            logit = float(ctr_score(x[None, :])[0]) + COUNTRY_OFFSET[country]
            p_x = 1.0 / (1.0 + math.exp(-logit))
            if not self._arrives(model, ui):
                continue  # lost before the request: no time spent, no record
            with self._lock:
                shift = self._shift.get(model)
            if shift:
                for i, d in shift.items():
                    x[i] += np.float32(d)
            await self._one(session, rng, model, ui, x, p_x)
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    next_at = time.monotonic()
                    await asyncio.sleep(0)

    def _arrives(self, model: str, ui: int) -> bool:
        """False for a lost user: routed to a canary whose users get lost, and one of the
        affected fraction (a second hash, so the same users are lost every time)."""
        with self._lock:
            canary = self._canary.get(model)
            frac = self._lost.get((model, canary[0])) if canary else None
        if canary is None or not frac:
            return True
        from serving.routing import BUCKETS, bucket

        user = self.users[ui]
        if bucket(f"canary:{model}:{self.slice}", user) >= canary[1] * BUCKETS / 100:
            return True
        if bucket(f"demo-lost:{model}", user) >= frac * BUCKETS:
            return True
        with self._lock:
            self.lost_requests[(model, canary[0])] += 1
        return False

    async def _one(
        self,
        session: Any,
        rng: np.random.Generator,
        model: str,
        ui: int,
        x: np.ndarray,
        p_x: float,
    ) -> None:
        user = self.users[ui]
        rid = uuid.uuid4().hex
        body = {
            "inputs": [
                {"name": "features", "shape": [1, len(x)], "datatype": "FP32", "data": x.tolist()}
            ]
        }
        headers = {
            "x-user-id": user,
            "x-slice": self.slice,
            "x-request-id": rid,
            "x-modelops-segment": self._country[ui],
        }
        try:
            async with session.post(
                f"{self.url}/v2/models/{model}/infer", json=body, headers=headers
            ) as r:
                await r.read()
                status = r.status
                version_h = r.headers.get("x-modelops-version")
                arm = r.headers.get("x-modelops-arm")
        except Exception:  # noqa: BLE001 - a refused connection is an error to count
            self._record(model, None, None, ok=False, kind="connect")
            return
        version = int(version_h) if version_h and version_h.isdigit() else None
        if status != 200 or version is None:
            self._record(model, version, arm, ok=False, kind=str(status))
            return
        self._record(model, version, arm, ok=True)
        click = float(rng.random() < self.click_probability(model, version, ui, p_x))
        try:
            async with session.post(
                f"{self.url}/v1/outcomes",
                json={"request_id": rid, "name": "click", "value": click},
                headers=self._auth,
            ) as o:
                await o.read()
                if o.status != 202:
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
