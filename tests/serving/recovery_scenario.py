"""Triton killed with `kill -9` under load, then restarted: real processes throughout.

The registry holds one promoted ONNX model. `tritonserver` serves it, `modelops serve
gateway` routes to it, and `modelops controller run` (a process of its own, as an operator
runs it) reconciles the two. Client threads send inference requests through the gateway
the whole time. Shared by the test (which asserts that traffic comes back with no human and
the controller never exits) and bench/recovery.py (which reports how long that takes).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from demo_models import DemoModel

from modelops.artifacts import LocalArtifactStore
from modelops.registry import Registry
from modelops.spec import ModelSpec, VersionMeta
from serving.triton.server import TritonServer, free_port

__all__ = ["TOKEN", "Sample", "Load", "Scenario"]

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "recovery-scenario-token-2f6c1d0e9b"
GUARD_S = 180.0
"""A stuck-scenario guard, never a measurement: waits give up after this long."""


@dataclass(frozen=True)
class Sample:
    sent: float  # monotonic, when the request left
    done: float
    status: int  # 0: no HTTP answer at all
    version: str | None
    retry_after: str | None


@dataclass
class Load:
    """Client threads posting one-row inferences through the gateway, back to back."""

    url: str
    body: dict[str, Any]
    threads: int = 2
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"load-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post(f"{self.url}/v2/models/ctr/infer", json=self.body)
                    s = Sample(
                        sent,
                        time.monotonic(),
                        r.status_code,
                        r.headers.get("x-modelops-version"),
                        r.headers.get("retry-after"),
                    )
                except httpx.HTTPError:
                    s = Sample(sent, time.monotonic(), 0, None, None)
                with self._lock:
                    self.samples.append(s)
                if s.status != 200:
                    time.sleep(0.02)  # the gateway said when to retry; a client would back off

    def since(self, t: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.sent >= t]

    def first_good(self, after: float) -> Sample | None:
        return next((s for s in self.since(after) if s.status == 200), None)

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(15)


class Scenario:
    """Registry, Triton, gateway and controller for one model; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        demo: DemoModel,
        *,
        interval_s: float = 0.5,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.workdir = workdir
        self.demo = demo
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.registry_url = f"sqlite:///{workdir / 'registry.db'}"
        self.store = LocalArtifactStore(workdir / "artifacts")
        self.triton = TritonServer(workdir / "repository", log_path=workdir / "triton.log")
        self.gateway: subprocess.Popen[bytes] | None = None
        self.controller: subprocess.Popen[bytes] | None = None
        self.gateway_url = ""
        self.controller_url = ""
        self.load: Load | None = None
        self.triton_ready_s = 0.0  # restart -> ready, of the last restart
        self.env = {
            **os.environ,
            "MODELOPS_HOME": str(workdir),
            "MODELOPS_GATEWAY_TOKEN": TOKEN,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }

    # ------------------------------------------------------------------ setup

    def _register(self) -> None:
        reg = Registry(self.registry_url)
        try:
            reg.add_team("ads")
            reg.register_dataset("clicks", 1, "s3://b/clicks", kind="dataset")
            reg.register_dataset("clicks-eval", 1, "s3://b/eval", kind="eval_set")
            reg.create_model(
                ModelSpec.model_validate(
                    {
                        "model_id": "ctr",
                        "owner_team": "ads",
                        "tier": "L1",
                        "model_class": "dnn",
                        "framework": "onnx",
                        "rollback_class": "STATELESS",
                        "policy": {"primary_metric": "ctr"},
                    }
                )
            )
            ref = self.store.put_file(self.demo.artifact)
            reg.register_version(
                "ctr",
                weights_hash=ref.sha256,
                weights_uri=ref.uri,
                training_run_id="run-1",
                training_data="clicks@1",
                eval_set="clicks-eval@1",
                meta=VersionMeta(signature=self.demo.signature),
            )
            reg.record_gate_result("ctr", 1, passed=True, results={})
            reg.transition("ctr", 1, "PROMOTED", actor="oncall")
        finally:
            reg.close()

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "modelops.cli", *args],
            stdout=open(self.workdir / log, "ab"),  # noqa: SIM115 - the child owns it
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
            start_new_session=True,
        )

    def start(self) -> Scenario:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._register()
        self.triton.start()
        gw_port, ctl_port = free_port(), free_port()
        self.gateway_url = f"http://127.0.0.1:{gw_port}"
        self.controller_url = f"http://127.0.0.1:{ctl_port}"
        self.gateway = self._spawn(
            ["serve", "gateway", "--port", str(gw_port), "--no-predlog",
             "--state-file", str(self.workdir / "routes.json")],
            "gateway.log",
        )  # fmt: skip
        self.wait_until(
            lambda: self._get(f"{self.gateway_url}/v2/health/live") == 200, "the gateway is up"
        )
        self.controller = self._spawn(
            ["--registry", self.registry_url, "controller", "run",
             "--triton", self.triton.url, "--repository", str(self.triton.repository),
             "--artifacts", str(self.store.root), "--gateway", self.gateway_url,
             "--interval", str(self.interval_s), "--max-backoff", str(self.max_backoff_s),
             "--port", str(ctl_port)],
            "controller.log",
        )  # fmt: skip
        sample = self.demo.sample[:1]
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
        self.load = Load(self.gateway_url, body).start()
        t0 = time.monotonic()
        self.wait_until(lambda: self.load.first_good(t0) is not None, "traffic is served")  # type: ignore[union-attr]
        return self

    # ------------------------------------------------------------------ the events

    def kill_triton(self) -> float:
        """`kill -9` of tritonserver and its backend stubs (its process group)."""
        proc = self.triton._proc
        assert proc is not None, "Triton is not running"
        t = time.monotonic()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(15)
        self.triton._proc = None
        return t

    def restart_triton(self) -> float:
        """The same binary on the same ports and repository, as a supervisor would."""
        t = time.monotonic()
        self.triton.start()
        self.triton_ready_s = time.monotonic() - t
        return t

    def status(self) -> dict[str, Any]:
        r = httpx.get(
            f"{self.controller_url}/v1/status",
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=5.0,
        )
        r.raise_for_status()
        return dict(r.json())

    def controller_alive(self) -> bool:
        return self.controller is not None and self.controller.poll() is None

    def error_passes(self) -> int:
        try:
            return int(self.status().get("error_passes", 0))
        except httpx.HTTPError:
            return -1

    def outage(self) -> dict[str, float]:
        """One kill and restart; returns its timings (monotonic seconds).

        Triton is restarted only once the controller has run a pass that found it dead, so
        every round exercises the failure path, not just a fast restart between passes.
        """
        assert self.load is not None
        seen = self.error_passes()
        killed = self.kill_triton()
        self.wait_until(lambda: self.error_passes() > seen, "the controller records a failed pass")
        restarted = self.restart_triton()
        self.wait_until(lambda: self.load.first_good(restarted) is not None, "traffic recovers")  # type: ignore[union-attr]
        good = self.load.first_good(restarted)
        assert good is not None
        return {
            "killed": killed,
            "restarted": restarted,
            "first_good_sent": good.sent,
            "first_good": good.done,
        }

    # ------------------------------------------------------------------ plumbing

    def _get(self, url: str) -> int:
        try:
            return httpx.get(url, timeout=2.0).status_code
        except httpx.HTTPError:
            return 0

    def wait_until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + GUARD_S
        while time.monotonic() < deadline:
            if self.controller is not None and not self.controller_alive():
                raise AssertionError(
                    f"the controller exited (code {self.controller.returncode}) while waiting "
                    f"until {what}:\n{self.log('controller.log')}"
                )
            if done():
                return
            time.sleep(0.05)
        raise AssertionError(
            f"stuck: waited {GUARD_S:.0f} s until {what}\n{self.log('controller.log')}"
        )

    def load_seconds(self) -> list[float]:
        """Every model load the controller reported, in order, from its log."""
        out = []
        for line in self.log("controller.log", tail=10_000_000).splitlines():
            m = re.match(r"load\s+\S+ \((\d+(?:\.\d+)?)s\)", line)
            if m:
                out.append(float(m.group(1)))
        return out

    def log(self, name: str, tail: int = 3000) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self) -> None:
        if self.load is not None:
            self.load.stop()
        for proc in (self.controller, self.gateway):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
        self.triton.stop()
