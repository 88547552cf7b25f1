"""Dagster plugin benchmark: how fast bad versions leave traffic, and what a sensor tick costs.

    .venv/bin/python bench/plugin.py [--skip-rollback] [--skip-breaker] [--skip-tick]

Writes bench/results/plugin.json. Figures, all on real processes:
1. `rollback_time_to_recover_s`: the demo's regression scenario for ctr_gbdt through the real
   dagster-daemon, the online-metrics sensor and the rollback job: from the first response
   of the regressed canary to the first response after which all traffic is on the last good
   version (target 60 s);
2. `breaker_recovery_s`: a canary at 10% that crashes (unloaded from Triton behind the
   controller's back), through the gateway's circuit breaker alone: from the first failed
   response to the first response after which every answer is prod's with no errors
   (target 1 s). The canary serves for a full breaker window first (steady state);
3. `sensor_tick_s`: one online-metrics tick over 500 models with 50 versions in canary or
   shadow (bench/sensor_tick.py; target 5 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, bench/ is sys.path[0]: drop it, so that no sibling script can shadow a
# package, and import the project (and bench.benchlib) from the repository root.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "plugin.json"
TARGETS = {"rollback_time_to_recover_s": 60.0, "breaker_recovery_s": 1.0, "sensor_tick_s": 5.0}


def bench_rollback(tmp: Path) -> dict[str, Any]:
    """The demo's phase 3 alone (bootstrap, then a regressed refresh of ctr_gbdt)."""
    from demo.run import run_demo

    result = run_demo(tmp / "demo-home", ["ctr_gbdt"], refresh_phase=False, quiet=True)
    reg = result.regressed or {}
    return {
        "rollback_time_to_recover_s": reg.get("time_to_recover_s"),
        "rollback.bad_version": reg.get("bad_version"),
        "rollback.good_version": reg.get("good_version"),
        "rollback.scenario_s": result.elapsed_s,
        "rollback.runs": result.runs,
    }


def bench_breaker(tmp: Path, rate: float = 300.0) -> dict[str, Any]:
    import numpy as np

    from assets.trainers import train_gbdt_onnx
    from demo.data import make_ctr_snapshot
    from demo.procs import Stack
    from demo.traffic import TrafficSim
    from modelops.artifacts import LocalArtifactStore
    from modelops.registry import Registry
    from modelops.spec import ModelSpec, VersionMeta
    from resources import ControllerResource
    from serving.routing import BreakerPolicy
    from serving.triton.backend import TritonBackend
    from serving.triton.repo import triton_model_name

    home = tmp / "breaker-home"
    model = "ctr_breaker"
    with Stack(home) as stack:
        stack.start_triton()
        stack.start_gateway()
        reg = Registry(f"sqlite:///{home / 'registry.db'}")
        store = LocalArtifactStore(home / "artifacts")
        reg.register_dataset("clicks", 1, "file:///clicks", kind="dataset")
        reg.register_dataset("clicks-eval", 1, "file:///eval", kind="eval_set")
        reg.add_team("ranking")
        reg.create_model(
            ModelSpec.model_validate(
                {
                    "model_id": model,
                    "owner_team": "ranking",
                    "tier": "L1",
                    "rollback_class": "STATELESS",
                    "model_class": "dnn",
                    "framework": "onnx",
                    "policy": {"primary_metric": "click"},
                }
            )
        )
        x, y, _ = make_ctr_snapshot(2000, seed=7)
        for v, seed in ((1, 0), (2, 1)):
            trained = train_gbdt_onnx(np.asarray(x), np.asarray(y), home / f"m{v}", seed=seed)
            ref = store.put_file(trained.artifact)
            reg.register_version(
                model,
                weights_hash=ref.sha256,
                weights_uri=ref.uri,
                training_run_id=f"bench-{v}",
                training_data="clicks@1",
                eval_set="clicks-eval@1",
                meta=VersionMeta(signature=trained.signature),
            )
            reg.record_gate_result(model, v, passed=True, results={})
        reg.transition(model, 1, "PROMOTED", actor="bench")
        for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY"):
            reg.transition(model, 2, st, actor="bench")
        reg.transition(model, 2, "CANARY", actor="bench", percent=10)
        assert stack.triton is not None
        ctl = ControllerResource(
            triton_url=stack.triton.url,
            repository=str(stack.triton.repository),
            gateways=[stack.gateway_url],
            lock_file=str(home / "controller.lock"),
            token=stack.token,
        )
        ctl.reconcile(reg, store)

        sim = TrafficSim(
            stack.gateway_url, [model], users=2000, workers=6, rate_per_s=rate, token=stack.token
        )
        with sim:
            time.sleep(BreakerPolicy().window_s + 2)  # a full window of healthy canary
            before = sim.counts(model)
            crash = time.time()
            TritonBackend(stack.triton.url).unload(triton_model_name(model, 2))
            time.sleep(6)
            log = [s for s in list(sim.log) if s.model == model]
        reg.close()
    bad = [s for s in log if s.ts >= crash and (not s.ok or s.version == 2)]
    first_bad = min((s.ts for s in bad if not s.ok), default=None)
    last_bad = max((s.ts for s in bad), default=None)
    after = [s for s in log if last_bad is not None and s.ts > last_bad]
    recovered = min((s.ts for s in after), default=None)
    out: dict[str, Any] = {
        "breaker.canary_served_before_crash": before.get(2, 0),
        "breaker.failed_responses": sum(1 for s in bad if not s.ok),
        "breaker.requests_after_recovery": len(after),
        "breaker.policy": BreakerPolicy().model_dump(),
        "breaker.rate_per_s": rate,
    }
    if first_bad is not None and recovered is not None:
        assert all(s.ok and s.version == 1 for s in after)
        out["breaker_recovery_s"] = round(recovered - first_bad, 3)
    else:
        out["breaker_recovery_s"] = None
    return out


def bench_tick() -> dict[str, Any]:
    try:
        from bench.sensor_tick import bench_sensor_tick  # written beside this file
    except ImportError as exc:
        return {"sensor_tick_s": None, "sensor_tick.error": f"bench/sensor_tick.py: {exc}"}
    res = bench_sensor_tick()
    if isinstance(res, dict):
        return res
    return {"sensor_tick_s": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--skip-rollback", action="store_true")
    ap.add_argument("--skip-breaker", action="store_true")
    ap.add_argument("--skip-tick", action="store_true")
    args = ap.parse_args()

    from bench.benchlib import machine_info

    out: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info([]),
        "targets": TARGETS,
    }
    with tempfile.TemporaryDirectory(prefix="modelops-bench-dagster-") as d:
        tmp = Path(d)
        if not args.skip_breaker:
            out.update(bench_breaker(tmp))
        if not args.skip_tick:
            out.update(bench_tick())
        if not args.skip_rollback:
            out.update(bench_rollback(tmp))
    import os

    out["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    out["met"] = {
        k: (out.get(k) is not None and out[k] <= t) for k, t in TARGETS.items() if k in out
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
