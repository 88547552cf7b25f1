"""Sensor-tick benchmark: one online-metrics tick over a fleet of 500 models.

Run: `.venv/bin/python bench/sensor_tick.py [--models 500] [--live 50] [--ticks 10] [--write]`
(prints one JSON object; `--write` also puts its keys into bench/results/plugin.json, leaving
the other benchmarks' figures there as they are). `bench_sensor_tick()` is what
bench/plugin.py calls.

The fleet, in a throwaway MODELOPS_HOME (SQLite registry and prediction log, the embedded
default): `n_models` models, each with a PROMOTED version promoted three days ago (outside
the 48 h watch); `n_live` of them with a candidate in SHADOW or CANARY (1/5/10%) for the
last two hours, a tenth of those regressed; `n_watch` others promoted an hour ago over a last
good version (inside the watch, so the sensor judges them too); `n_new` others with a fresh
OFFLINE_PASSED version for the candidate sensor. Every fifth model is tier L2 (weight
refreshes on one feature contract), the rest L1. The prediction log holds `rows` requests
with a click outcome for every prod arm and every candidate arm over the last two hours.
Prod's rows come from `users` keyed users (a salted user hash, as the gateway logs it) and
a canary's from its step's share of that many, so the tick takes the per-user path the
sequential engine decides on: the SQL per-user sums, the SRM check and the harm tests.
Shadow rows are mirrors and carry no user, as in the gateway.

A tick is measured as the daemon runs it: a fresh sensor context with fresh resources (a new
registry engine and log reader each time), then the evaluation. The first tick of a new
sensor object is reported apart, because the sensor caches immutable registry facts (specs,
contract refs) across ticks in the code server's process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["bench_sensor_tick"]

TARGET_TICK_S = 5.0
HOUR = 3600.0
_CONTRACT = "bench_features@1"
_SALT = b"bench-sensor-tick-salt"
RESULTS = Path(__file__).resolve().parent / "results" / "plugin.json"


class _Clock:
    """The registry's injectable clock, moved by the setup to backdate transitions."""

    def __init__(self, ts: float) -> None:
        self.ts = ts

    def __call__(self) -> datetime:
        self.ts += 0.001
        return datetime.fromtimestamp(self.ts, UTC)


def _fleet(n_models: int) -> Any:
    from modelops.fleet import Fleet

    models = []
    for i in range(n_models):
        models.append(
            {
                "spec": {
                    "model_id": _mid(i),
                    "owner_team": "ranking",
                    "tier": "L2" if i % 5 == 0 else "L1",
                    "rollback_class": "STATELESS",
                    "model_class": "dnn",
                    "framework": "onnx",
                    "policy": {"primary_metric": "click", "min_samples": 100},
                },
                "trainer": "assets.trainers:train_gbdt_onnx",
                "dataset": "bench_clicks",
                "eval_set": "bench_eval",
                "feature_contract": "bench_features",
                "online": {"min_requests": 50, "max_primary_drop": 0.3},
            }
        )
    return Fleet.model_validate(
        {
            "datasets": [
                {"name": "bench_clicks", "kind": "dataset"},
                {"name": "bench_eval", "kind": "eval_set"},
            ],
            "feature_contracts": [
                {
                    "name": "bench_features",
                    "version": 1,
                    "features": [{"name": "f0", "dtype": "float32"}],
                }
            ],
            "models": models,
        }
    )


def _mid(i: int) -> str:
    return f"bench_m{i:03d}"


def _register(reg: Any, model_id: str, label: str) -> int:
    v = reg.register_version(
        model_id,
        weights_hash=hashlib.sha256(f"{model_id}/{label}".encode()).hexdigest(),
        weights_uri=f"file:///bench/{model_id}/{label}.onnx",
        training_run_id=f"run-{model_id}-{label}",
        training_data="bench_clicks@1",
        eval_set="bench_eval@1",
        feature_contract_ref=_CONTRACT,
    )
    reg.record_gate_result(model_id, v.version, passed=True, results={"auc": 0.7})
    return int(v.version)


def _build_registry(fleet: Any, now: float, plan: dict[str, list[int]]) -> dict[str, float]:
    """Everything through the Registry API; returns how long each part took."""
    from modelops.identity import generate_signing_key
    from modelops.registry import Registry
    from modelops.spec import State, Tier

    clock = _Clock(now - 3 * 24 * HOUR)
    t0 = time.perf_counter()
    reg = Registry(clock=clock)
    try:
        reg.register_dataset("bench_clicks", 1, "file:///bench/data/clicks/v1.npz")
        reg.register_dataset("bench_eval", 1, "file:///bench/data/eval/v1.npz", kind="eval_set")
        reg.register_contract(fleet.contract("bench_features"))
        reg.add_team("platform")
        approver = generate_signing_key()
        reg.enroll_actor("bench-approver", "platform", public_key=approver.public_key)
        for decl in fleet.models:
            reg.add_team(decl.spec.owner_team)
            spec = reg.create_model(decl.spec)
            v = _register(reg, spec.model_id, "a")
            if spec.tier is Tier.L2:  # a first L2 version is no refresh: one approval
                reg.approve(
                    spec.model_id, v, actor="bench-approver", key=approver, target=State.PROMOTED
                )
            reg.transition(spec.model_id, v, State.PROMOTED, actor="bench-deployer")
        t_prod = time.perf_counter()

        def to_shadow(m: str, v: int) -> None:
            reg.transition(m, v, State.APPROVED_SHADOW, actor="bench-deployer")
            reg.transition(m, v, State.SHADOW, actor="bench-deployer", percent=100, mode="live")

        def to_canary(m: str, v: int, pct: int) -> None:
            to_shadow(m, v)
            reg.transition(m, v, State.APPROVED_CANARY, actor="bench-deployer")
            reg.transition(m, v, State.CANARY, actor="bench-deployer", percent=pct)

        clock.ts = now - 2 * HOUR
        ladder = fleet.canary_ladder
        plan["canary_percent"] = {}  # the prediction log splits its users by these
        for k, i in enumerate(plan["live"]):
            m = _mid(i)
            v = _register(reg, m, "b")
            if k % 2:
                to_shadow(m, v)
            else:
                pct = ladder[(k // 2) % len(ladder)]
                plan["canary_percent"][i] = pct
                to_canary(m, v, pct)
        clock.ts = now - HOUR
        for i in plan["watch"]:
            m = _mid(i)
            v = _register(reg, m, "b")
            to_canary(m, v, ladder[-1])
            reg.transition(m, v, State.PROMOTED, actor="bench-deployer")
        for i in plan["new"]:
            _register(reg, _mid(i), "b")
        counts = reg.row_counts()
    finally:
        reg.close()
    t_end = time.perf_counter()
    return {
        "registry_prod_s": round(t_prod - t0, 2),
        "registry_candidates_s": round(t_end - t_prod, 2),
        "registry_rows": counts,
    }


def _build_predlog(
    now: float, plan: dict[str, Any], rows: int, seed: int, users: int
) -> dict[str, Any]:
    """Requests and click outcomes over the last two hours, written by the gateway's log.

    Prod's requests come from `users` keyed users; a canary's from its step's share of them
    (users * p / (100 - p), at least one: the split the gateway's sticky assignment gives,
    so the sample-ratio check sees the configured split). A shadow's rows are mirrors,
    logged with no user as the gateway logs them."""
    from serving.predlog import PredictionLog
    from serving.predlog.userhash import hash_user
    from serving.records import Outcome, PredictionRecord

    rnd = random.Random(seed)
    t0 = time.perf_counter()
    n = 0

    def series(
        log: Any, m: str, v: int, arm: str, lo: float, hi: float, ctr: float, keyed: int
    ) -> None:
        nonlocal n
        hashes = [hash_user(f"{m}/{arm}/user-{k}", _SALT) for k in range(keyed)] or [None]
        for j in range(rows):
            rid = f"{m}-{v}-{arm}-{j}"
            ts = lo + (hi - lo) * (j + rnd.random()) / rows
            err = "backend_5xx" if rnd.random() < 0.005 else None
            log.submit(
                PredictionRecord(
                    request_id=rid,
                    ts=ts,
                    model_id=m,
                    version=v,
                    arm=arm,
                    slice="global",
                    user_bucket=rnd.randrange(10_000),
                    user_hash=hashes[j % len(hashes)],
                    latency_ms=rnd.lognormvariate(2.5, 0.4),
                    error=err,
                    outputs={"probability": [round(rnd.random(), 4)]},
                )
            )
            if err is None:
                click = float(rnd.random() < ctr)
                log.submit_outcome(Outcome(request_id=rid, ts=ts + 5, name="click", value=click))
            n += 1

    live = set(plan["live"])
    watch = set(plan["watch"])
    regressed = set(plan["regressed"])
    with PredictionLog(max_queue=1_000_000) as log:
        for i in range(plan["n_models"]):
            m = _mid(i)
            if i in watch:  # v1 served until the promotion an hour ago, v2 since
                series(log, m, 1, "prod", now - 2 * HOUR, now - HOUR, 0.10, users)
                series(log, m, 2, "prod", now - HOUR + 1, now, 0.10, users)
                continue
            series(log, m, 1, "prod", now - 2 * HOUR + 60, now, 0.10, users)
            if i in live:
                pct = plan["canary_percent"].get(i)
                arm = "canary" if pct is not None else "shadow"
                keyed = max(1, round(users * pct / (100 - pct))) if pct is not None else 0
                ctr = 0.02 if i in regressed else 0.10
                series(log, m, 2, arm, now - 2 * HOUR + 60, now, ctr, keyed)
        log.flush(timeout=300)
        written, dropped = log.written, log.dropped
    return {
        "predlog_s": round(time.perf_counter() - t0, 2),
        "predlog_requests": n,
        "predlog_written": written,
        "predlog_dropped": dropped,
    }


def _stats(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    p95 = s[min(len(s) - 1, max(0, round(0.95 * (len(s) - 1))))]
    return {
        "n": len(s),
        "median_s": round(statistics.median(s), 4),
        "p95_s": round(p95, 4),
        "max_s": round(s[-1], 4),
    }


def _tick(sensor: Any, cursor: str | None, with_predlog: bool) -> tuple[float, Any]:
    """One daemon-like evaluation: fresh resources, fresh context, then the sensor."""
    import dagster as dg

    from resources import PredictionLogResource, RegistryResource

    t0 = time.perf_counter()
    resources: dict[str, Any] = {"registry": RegistryResource()}
    if with_predlog:
        resources["predlog"] = PredictionLogResource()
    with dg.build_sensor_context(resources=resources, cursor=cursor) as ctx:
        result = sensor.evaluate_tick(ctx)
    return time.perf_counter() - t0, result


def bench_sensor_tick(
    n_models: int = 500,
    n_live: int = 50,
    *,
    n_watch: int = 10,
    n_new: int = 25,
    rows: int = 200,
    users: int = 120,
    ticks: int = 10,
    seed: int = 20260101,
) -> dict[str, Any]:
    """Build the fleet in a throwaway home, time the sensors' ticks, return the figures."""
    if n_live + n_watch + n_new > n_models:
        raise ValueError("n_live + n_watch + n_new must not exceed n_models")
    if not 1 <= users <= rows:
        raise ValueError("prod's users must be between 1 and rows")
    rnd = random.Random(seed)
    picked = rnd.sample(range(n_models), n_live + n_watch + n_new)
    live = sorted(picked[:n_live])
    plan: dict[str, Any] = {
        "n_models": n_models,
        "live": live,
        "watch": sorted(i for i in picked[n_live : n_live + n_watch] if i % 5),
        "new": sorted(picked[n_live + n_watch :]),
        "regressed": set(live[:: max(1, 10)]),
    }
    old_home = os.environ.get("MODELOPS_HOME")
    saved = {
        k: os.environ.pop(k)
        for k in ("MODELOPS_REGISTRY_URL", "MODELOPS_PREDLOG_URL")
        if k in os.environ
    }
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="modelops_bench_tick_") as home:
        os.environ["MODELOPS_HOME"] = home
        try:
            from jobs import ACTION_JOBS
            from sensors import build_candidate_sensor, build_online_metrics_sensor

            t_setup = time.perf_counter()
            fleet = _fleet(n_models)
            setup = _build_registry(fleet, now, plan)
            setup.update(_build_predlog(now, plan, rows, seed, users))
            setup["setup_s"] = round(time.perf_counter() - t_setup, 2)

            online = build_online_metrics_sensor(fleet, jobs=ACTION_JOBS, clock=lambda: now)
            first_s, result = _tick(online, None, True)
            verdicts = Counter(r.tags["modelops/action"] for r in result.run_requests)
            times, cursor = [], result.cursor
            for _ in range(ticks):
                dt, res = _tick(online, cursor, True)
                times.append(dt)
                cursor = res.cursor
            decisions = Counter(
                v.split(" ", 1)[0] for v in json.loads(cursor)["last_decisions"].values()
            )

            cand = build_candidate_sensor(fleet, jobs=ACTION_JOBS)
            c_first, c_res = _tick(cand, None, False)
            c_times, c_cursor = [], c_res.cursor
            for _ in range(ticks):
                dt, res = _tick(cand, c_cursor, False)
                c_times.append(dt)
                c_cursor = res.cursor
        finally:
            if old_home is None:
                os.environ.pop("MODELOPS_HOME", None)
            else:
                os.environ["MODELOPS_HOME"] = old_home
            os.environ.update(saved)
    online_stats = _stats(times)
    return {
        "sensor_tick_s": online_stats["median_s"],
        "sensor_tick_first_s": round(first_s, 4),
        "sensor_tick_p95_s": online_stats["p95_s"],
        "sensor_tick_max_s": online_stats["max_s"],
        "fleet": {
            "models": n_models,
            "live_candidates": n_live,
            "watched_promotions": len(plan["watch"]),
            "regressed_candidates": len(plan["regressed"]),
            "offline_passed_candidates": len(plan["new"]),
            "rows_per_series": rows,
            "prod_users_per_series": users,
        },
        "setup": setup,
        "online_metrics_tick": {"first_s": round(first_s, 4), **online_stats},
        "online_metrics_decisions": dict(sorted(decisions.items())),
        "online_metrics_run_requests": dict(sorted(verdicts.items())),
        "candidate_tick": {"first_s": round(c_first, 4), **_stats(c_times)},
        "candidate_run_requests": len(c_res.run_requests),
        "target_tick_s": TARGET_TICK_S,
        "meets_target": max(online_stats["max_s"], first_s) <= TARGET_TICK_S,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--models", type=int, default=500)
    p.add_argument("--live", type=int, default=50)
    p.add_argument("--watch", type=int, default=10)
    p.add_argument("--ticks", type=int, default=10)
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--users", type=int, default=120, help="prod's keyed users per series")
    p.add_argument("--write", action="store_true", help=f"merge the figures into {RESULTS}")
    args = p.parse_args(argv)
    from benchlib import machine_info

    out = bench_sensor_tick(
        args.models,
        args.live,
        n_watch=args.watch,
        rows=args.rows,
        users=args.users,
        ticks=args.ticks,
    )
    out["machine"] = machine_info(["sqlite"])
    print(json.dumps(out, indent=2, sort_keys=True))
    if args.write:
        write_results(out)
    return 0 if out["meets_target"] else 1


def write_results(out: dict[str, Any], path: Path = RESULTS) -> None:
    """This benchmark's keys into the plugin results (the file bench/plugin.py writes whole),
    with its own run time and machine; the other benchmarks' figures stay as they are."""
    res = json.loads(path.read_text()) if path.exists() else {}
    figures = {k: v for k, v in out.items() if k != "machine"}
    res.update(figures)
    res["sensor_tick.timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res["sensor_tick.machine"] = out.get("machine")
    met = res.setdefault("met", {})
    met["sensor_tick_s"] = out["sensor_tick_s"] <= TARGET_TICK_S
    path.write_text(json.dumps(res, indent=2, default=str) + "\n")


if __name__ == "__main__":
    # Run as a script, bench/ is sys.path[0]: take benchlib from there first, then drop the
    # directory from the path, so that nothing beside this file can shadow a package.
    import benchlib  # noqa: F401 - kept in sys.modules for main()

    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.exit(main())
