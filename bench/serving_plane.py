"""Serving benchmark: every figure is a ratio or a delta against a baseline in the same run.

    .venv/bin/python bench/serving_plane.py [--quick]

Writes bench/results/serving_plane.json. What it measures, on the real processes:
1. the gateway against direct Triton on the same ONNX model, through tritonclient over HTTP,
   serially and at concurrency 16: added p50/p99 latency and the throughput ratio;
   with one gateway process and with two sharing the port (SO_REUSEPORT), which is how the
   gateway scales instead of uvicorn --workers (that path loses TCP_NODELAY);
2. shadow mirroring of 100% of requests against none: inflation of the user path's p50/p99;
3. route flip: from a registry transition (desired-state change) to every gateway routing
   100% to the new target, through the controller; the target is kept warm, so it is a flip;
4. the Triton load time of each demo model (ONNX, TorchScript, SavedModel).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, bench/ is sys.path[0]: import the project (and bench.benchlib) from the
# repository root instead, so that no sibling script can shadow a package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "serving"))  # the demo model builders

from demo_models import build_onnx_ctr, build_tf_savedmodel, build_torch_mlp  # noqa: E402

from bench.benchlib import machine_info  # noqa: E402
from modelops.artifacts import LocalArtifactStore  # noqa: E402
from modelops.registry import Registry  # noqa: E402
from modelops.spec import ModelClass, ModelSpec, VersionMeta  # noqa: E402
from serving.controller import Controller, TritonAdapter  # noqa: E402
from serving.routing import (  # noqa: E402
    BackendKind,
    Endpoint,
    RouteTable,
    RoutingSnapshot,
    ShadowRoute,
)
from serving.triton.backend import RetentionPolicy, TritonBackend  # noqa: E402
from serving.triton.repo import RepositoryWriter  # noqa: E402
from serving.triton.server import TritonServer, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serving_plane.json"
# The service token shared by this run's gateways (each has a home of its own) and controller.
TOKEN = secrets.token_urlsafe(32)
ROUNDS = 5
TARGETS = {
    "added_p50_ms": 1.0,
    "added_p99_ms": 3.0,
    "throughput_ratio_c16": 0.5,
    "shadow_p99_inflation": 0.05,
    "route_flip_s": 1.0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def serial(url: str, model: str, sample: np.ndarray, n: int) -> list[float]:
    """Per-request latency in ms through one keep-alive tritonclient connection."""
    import tritonclient.http as th

    client = th.InferenceServerClient(url)
    inp = th.InferInput("features", list(sample.shape), "FP32")
    inp.set_data_from_numpy(sample)
    for _ in range(50):  # warm-up: connection, caches
        client.infer(model, [inp])
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        client.infer(model, [inp])
        out.append((time.perf_counter_ns() - t0) / 1e6)
    client.close()
    return out


def concurrent(url: str, model: str, sample: np.ndarray, n: int, conc: int = 16) -> float:
    """Requests per second with `conc` clients in flight, each on its own connection."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.http as th

    def worker(count: int) -> None:
        client = th.InferenceServerClient(url)
        inp = th.InferInput("features", list(sample.shape), "FP32")
        inp.set_data_from_numpy(sample)
        for _ in range(count):
            client.infer(model, [inp])
        client.close()

    per = max(1, n // conc)
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(worker, [5] * conc))  # warm-up: connections
        t0 = time.perf_counter()
        list(pool.map(worker, [per] * conc))
        return per * conc / (time.perf_counter() - t0)


class Gateway:
    """`modelops serve gateway` as a real process (or several sharing a port)."""

    def __init__(self, workdir: Path, routes: RoutingSnapshot, *, workers: int = 1) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        routes_file = workdir / "routes.json"
        routes_file.write_text(routes.model_dump_json())
        self.log = open(workdir / "gateway.log", "ab")  # noqa: SIM115
        env = {**os.environ, "MODELOPS_HOME": str(workdir), "MODELOPS_GATEWAY_TOKEN": TOKEN}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelops.cli", "serve", "gateway", "--port", str(self.port),
             "--workers", str(workers), "--routes", str(routes_file),
             "--predlog", f"sqlite:///{workdir / 'predictions.db'}"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        self.url = f"127.0.0.1:{self.port}"
        self._wait()

    def _wait(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gateway exited with {self.proc.returncode}; see its log")
            try:
                if httpx.get(f"http://{self.url}/v2/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("gateway did not become ready")

    def stop(self) -> None:
        import signal

        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.proc.wait(15)
        self.log.close()


def endpoint(server: TritonServer, name: str, version: int) -> Endpoint:
    return Endpoint(
        version=version, backend=BackendKind.triton, url=server.http_url, backend_model=name
    )


def bench_latency(
    server: TritonServer,
    work: Path,
    names: dict[int, str],
    sample: np.ndarray,
    n: int,
    out: dict[str, Any],
) -> None:
    base = RoutingSnapshot(
        tables=[
            RouteTable(
                model_id="ctr", slice="global", generation=1, prod=endpoint(server, names[1], 1)
            )
        ]
    )
    shadowed = RoutingSnapshot(
        tables=[
            base.tables[0].model_copy(
                update={"shadow": ShadowRoute(endpoint=endpoint(server, names[2], 2), percent=100)}
            )
        ]
    )
    # All gateways run at once (idle ones cost nothing) and every round measures direct and
    # each gateway back to back, so a burst of noise on this shared machine lands on all of
    # them; ratios are medians of per-round ratios, latencies pool over the rounds.
    gws: dict[str, Gateway] = {}
    try:
        gws["gateway"] = Gateway(work / "gw1", base)
        gws["gateway_2proc"] = Gateway(work / "gw2", base, workers=2)
        gws["gateway_shadow100"] = Gateway(work / "gw3", shadowed)
        labels = ["direct", *gws]
        lat: dict[str, list[float]] = {k: [] for k in labels}
        rates: dict[str, list[float]] = {k: [] for k in labels}
        for r in range(ROUNDS):
            for label in labels:
                url = server.url if label == "direct" else gws[label].url
                model = names[1] if label == "direct" else "ctr"
                lat[label] += serial(url, model, sample, n // ROUNDS)
                rates[label].append(concurrent(url, model, sample, n // ROUNDS))
            log(
                f"round {r + 1}/{ROUNDS}: c16 "
                + ", ".join(f"{k} {rates[k][-1]:.0f}/s" for k in labels)
            )
    finally:
        for g in gws.values():
            g.stop()
    rate = {k: statistics.median(v) for k, v in rates.items()}
    for label in gws:
        rate[f"{label}.ratio"] = statistics.median(
            g / d for g, d in zip(rates[label], rates["direct"], strict=True)
        )
        lat[f"{label}.baseline"] = lat["direct"]
    d50, d99 = pct(lat["direct"], 50), pct(lat["direct"], 99)
    out["direct.serial_p50_ms"] = round(d50, 3)
    out["direct.serial_p99_ms"] = round(d99, 3)
    out["direct.c16_rps"] = round(rate["direct"], 1)
    for label in ("gateway", "gateway_2proc", "gateway_shadow100"):
        b50, b99 = pct(lat[f"{label}.baseline"], 50), pct(lat[f"{label}.baseline"], 99)
        g50, g99 = pct(lat[label], 50), pct(lat[label], 99)
        out[f"{label}.serial_p50_ms"] = round(g50, 3)
        out[f"{label}.serial_p99_ms"] = round(g99, 3)
        out[f"{label}.added_p50_ms"] = round(g50 - b50, 3)
        out[f"{label}.added_p99_ms"] = round(g99 - b99, 3)
        out[f"{label}.c16_rps"] = round(rate[label], 1)
        out[f"{label}.throughput_ratio_c16"] = round(rate[f"{label}.ratio"], 3)
    # Shadow inflation: the shadowed gateway against the plain one, in the same rounds.
    s50, s99 = out["gateway_shadow100.serial_p50_ms"], out["gateway_shadow100.serial_p99_ms"]
    p50, p99 = out["gateway.serial_p50_ms"], out["gateway.serial_p99_ms"]
    out["shadow_p50_inflation"] = round(s50 / p50 - 1, 3)
    out["shadow_p99_inflation"] = round(s99 / p99 - 1, 3)
    out["serial_samples"] = n


def bench_route_flip(
    server: TritonServer,
    work: Path,
    store: LocalArtifactStore,
    artifacts: list[Path],
    signature: dict[str, Any],
    sample: np.ndarray,
    flips: int,
    out: dict[str, Any],
) -> None:
    """Registry transition -> controller pass -> both gateways route 100% to the target."""
    import httpx

    reg = Registry(f"sqlite:///{work / 'flip-registry.db'}")
    reg.register_dataset("clicks", 1, "s3://b/c", kind="dataset")
    reg.register_dataset("clicks-eval", 1, "s3://b/e", kind="eval_set")
    reg.add_team("ads")
    reg.create_model(
        ModelSpec(
            model_id="flip",
            owner_team="ads",
            tier="L1",
            rollback_class="STATELESS",
            model_class="dnn",
            framework="onnx",
            policy={"primary_metric": "ctr"},
        )
    )
    for i, art in enumerate(artifacts, start=1):
        ref = store.put_file(art)
        reg.register_version(
            "flip",
            weights_hash=ref.sha256,
            weights_uri=ref.uri,
            training_run_id=f"r{i}",
            training_data="clicks@1",
            eval_set="clicks-eval@1",
            meta=VersionMeta(signature=signature),
        )
        reg.record_gate_result("flip", i, passed=True, results={})
    gws: list[Gateway] = []
    try:
        for i in range(2):
            gws.append(Gateway(work / f"flip-gw{i}", RoutingSnapshot()))
    except BaseException:
        for g in gws:
            g.stop()
        raise
    adapter = TritonAdapter(server.url, server.repository, store, contracts=reg.get_contract)
    ctl = Controller(
        reg,
        {ModelClass.dnn: adapter},
        gateways=[f"http://{g.url}" for g in gws],
        retention=RetentionPolicy(window_s=3600),
        token=TOKEN,
    )
    try:
        reg.transition("flip", 1, "PROMOTED", actor="bench")
        ctl.reconcile_once()
        for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY"):
            reg.transition("flip", 2, st, actor="bench")
        reg.transition("flip", 2, "PROMOTED", actor="bench")
        ctl.reconcile_once()  # both versions now loaded: v1 is the warm rollback target
        clients = [httpx.Client(base_url=f"http://{g.url}", timeout=5) for g in gws]
        body = {
            "inputs": [
                {
                    "name": "features",
                    "shape": list(sample.shape),
                    "datatype": "FP32",
                    "data": sample.ravel().tolist(),
                }
            ]
        }

        def served(c: httpx.Client) -> int:
            r = c.post("/v2/models/flip/infer", json=body)
            r.raise_for_status()
            return int(r.headers["x-modelops-version"])

        # Each flip: a fresh candidate is prod, v1 is the warm rollback target; time from the
        # rollback (a desired-state change) to both gateways serving v1 to every request.
        times = []
        for v in range(2, min(len(artifacts), flips + 1) + 1):
            if v > 2:
                for st in ("APPROVED_SHADOW", "SHADOW", "APPROVED_CANARY", "CANARY", "PROMOTED"):
                    reg.transition("flip", v, st, actor="bench")
                ctl.reconcile_once()
            if not all(served(c) == v for c in clients):
                raise SystemExit(f"gateways do not serve v{v} before the flip")
            t0 = time.perf_counter()
            reg.rollback("flip", actor="bench")
            ctl.reconcile_once()
            deadline = time.monotonic() + 10
            while not all(served(c) == 1 for c in clients):
                if time.monotonic() > deadline:
                    raise SystemExit("route flip did not converge within 10 s")
            times.append(time.perf_counter() - t0)
        out["route_flip_s_max"] = round(max(times), 4)
        out["route_flip_s_median"] = round(statistics.median(times), 4)
        out["route_flip_samples"] = len(times)
        out["route_flip_gateways"] = len(gws)
    finally:
        for g in gws:
            g.stop()
        reg.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer samples, for a smoke run")
    args = ap.parse_args()
    n = 300 if args.quick else 2000
    out: dict[str, Any] = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if args.quick else "full",
        "machine": machine_info([]),
        "rounds": ROUNDS,
        "targets": TARGETS,
    }
    with tempfile.TemporaryDirectory(prefix="modelops-bench-") as tmp:
        work = Path(tmp)
        store = LocalArtifactStore(work / "artifacts")
        log("building demo models")
        onnx = [build_onnx_ctr(work / f"onnx{s}", seed=s) for s in range(5)]
        others = {"torch": build_torch_mlp(work / "torch"), "tf": build_tf_savedmodel(work / "tf")}
        server = TritonServer(work / "repository", log_path=work / "triton.log").start()
        try:
            from demo_models import demo_version

            writer = RepositoryWriter(server.repository, store)
            triton = TritonBackend(server.url)
            names: dict[int, str] = {}
            for i, demo in ((1, onnx[0]), (2, onnx[1])):
                mv = demo_version(demo, store, model_id="ctr", version=i)
                names[i] = writer.write(mv).name
            for label, demo in (
                ("onnx", onnx[0]),
                ("torch", others["torch"]),
                ("tf", others["tf"]),
            ):
                mv = demo_version(demo, store, model_id=f"load-{label}", version=1)
                name = writer.write(mv).name
                out[f"triton_load_s.{label}"] = round(triton.load(name), 3)
                triton.unload(name)
                log(f"load {label}: {out[f'triton_load_s.{label}']} s")
            for name in names.values():
                triton.load(name)
            sample = onnx[0].sample[:1]
            bench_latency(server, work, names, sample, n, out)
            bench_route_flip(
                server, work, store, [d.artifact for d in onnx], onnx[0].signature, sample, 4, out
            )
        finally:
            server.stop()
    out["targets_met"] = {
        "added_p50_ms": out["gateway.added_p50_ms"] <= TARGETS["added_p50_ms"],
        "added_p99_ms": out["gateway.added_p99_ms"] <= TARGETS["added_p99_ms"],
        "throughput_ratio_c16": out["gateway.throughput_ratio_c16"]
        >= TARGETS["throughput_ratio_c16"],
        "shadow_p99_inflation": out["shadow_p99_inflation"] <= TARGETS["shadow_p99_inflation"],
        "route_flip_s": out["route_flip_s_max"] <= TARGETS["route_flip_s"],
    }
    out["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
