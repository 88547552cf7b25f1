"""A small supervisor for the demo's processes: Triton, the gateway, the Dagster daemon and
(optionally) the webserver.

Each process gets its own session (process group) and a log file under $MODELOPS_HOME/logs,
is waited on until it actually answers, and is stopped group-wide: SIGTERM, then SIGKILL
after a grace period, so the daemon's code server and run workers go with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modelops.errors import ModelopsError
from serving.triton.server import TritonServer, free_port

__all__ = ["REPO_ROOT", "Proc", "Stack", "http_ok", "wait_until"]

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def wait_until(
    what: str, pred: Callable[[], bool], timeout: float, proc: Proc | None = None
) -> None:
    """Poll `pred` until it holds; fail with one line naming `what` (and the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise ModelopsError(
                f"{proc.name} exited with code {proc.returncode} while waiting for {what}; "
                f"see {proc.log_path}"
            )
        if pred():
            return
        time.sleep(0.2)
    hint = f"; see {proc.log_path}" if proc is not None else ""
    raise ModelopsError(f"timed out after {timeout:.0f}s waiting for {what}{hint}")


@dataclass
class Proc:
    """One supervised child process, alone in its process group."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path = REPO_ROOT
    _popen: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._popen = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the whole group, wait, then SIGKILL what is left."""
        p = self._popen
        if p is None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # stragglers: code servers, run workers
        except ProcessLookupError:
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self._log is not None:
            self._log.close()
        self._popen = None


@dataclass
class Stack:
    """Everything the demo runs beside Dagster's own storage, under one home directory."""

    home: Path
    fleet_file: Path | None = None
    gateway_port: int = 0
    triton: TritonServer | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    token: str = field(default="", repr=False)  # the service token; resolved for the home
    webserver_port: int | None = None
    workspace: Path = REPO_ROOT / "workspace.yaml"

    def __post_init__(self) -> None:
        from modelops.service_token import service_token

        self.home = Path(self.home).resolve()
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        if not self.gateway_port:
            self.gateway_port = free_port()
        # One service token for every process of the stack: the gateway demands it, the
        # controller and the traffic simulator send it.
        if not self.token:
            self.token = service_token(self.home)

    # -- environment -------------------------------------------------------------------

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def predlog_url(self) -> str:
        return f"sqlite:///{self.home / 'predictions.db'}"

    def env(self) -> dict[str, str]:
        """What every process (and every Dagster run) sees."""
        env = dict(os.environ)
        env.update(
            MODELOPS_HOME=str(self.home),
            DAGSTER_HOME=str(self.dagster_home),
            MODELOPS_GATEWAYS=self.gateway_url,
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
            PYTHONUNBUFFERED="1",
            MODELOPS_GATEWAY_TOKEN=self.token,
        )
        if self.triton is not None:
            env["MODELOPS_TRITON_URL"] = self.triton.url
        if self.fleet_file is not None:
            env["MODELOPS_FLEET"] = str(Path(self.fleet_file).resolve())
        for var in ("MODELOPS_REGISTRY_URL", "MODELOPS_ARTIFACTS", "MODELOPS_PREDLOG_URL"):
            env.pop(var, None)  # the embedded defaults under this home
        return env

    def apply_env(self) -> None:
        """Point this process's resources and registry at the same home."""
        os.environ.update(
            {k: v for k, v in self.env().items() if k.startswith(("MODELOPS_", "DAGSTER_"))}
        )

    # -- processes ---------------------------------------------------------------------

    def start_triton(self, timeout: float = 90.0) -> TritonServer:
        self.triton = TritonServer(
            self.home / "triton-repo", log_path=self.home / "logs" / "triton.log"
        )
        self.triton.start(timeout=timeout)
        return self.triton

    def start_gateway(self, timeout: float = 30.0) -> Proc:
        cmd = [
            str(BIN / "modelops"),
            "serve",
            "gateway",
            "--port",
            str(self.gateway_port),
            "--predlog",
            self.predlog_url,
            "--log-level",
            "warning",
        ]
        p = self._start("gateway", cmd)
        wait_until("the gateway", lambda: http_ok(f"{self.gateway_url}/v2/health/live"), timeout, p)
        return p

    def start_daemon(self, timeout: float = 60.0) -> Proc:
        """`dagster-daemon run`: ready once its sensor and queue daemons heartbeat."""
        p = self._start(
            "dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)]
        )
        started = time.time()

        def beating() -> bool:
            beats = _heartbeats(self.dagster_home)
            need = ("SENSOR", "QUEUED_RUN_COORDINATOR", "SCHEDULER")
            return all(beats.get(n, 0.0) >= started for n in need)

        wait_until("the dagster daemon's heartbeats", beating, timeout, p)
        return p

    def start_webserver(self, port: int | None = None, timeout: float = 90.0) -> Proc:
        self.webserver_port = port or free_port()
        cmd = [
            str(BIN / "dagster-webserver"),
            "-w",
            str(self.workspace),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.webserver_port),
        ]
        p = self._start("dagster-webserver", cmd)
        url = f"http://127.0.0.1:{self.webserver_port}/server_info"
        wait_until("the dagster webserver", lambda: http_ok(url), timeout, p)
        return p

    def _start(self, name: str, cmd: list[str]) -> Proc:
        p = Proc(name, cmd, self.env(), self.home / "logs" / f"{name}.log").start()
        self.procs[name] = p
        return p

    def stop(self) -> None:
        """Stop in reverse start order: Dagster first, so no run acts on a dead plane."""
        for name in reversed(list(self.procs)):
            self.procs[name].stop()
        self.procs.clear()
        if self.triton is not None:
            self.triton.stop()
            self.triton = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _heartbeats(dagster_home: Path) -> dict[str, float]:
    """Daemon type -> last heartbeat timestamp, read from the instance's storage."""
    import dagster as dg

    if not (dagster_home / "dagster.yaml").exists():
        return {}
    try:
        instance = dg.DagsterInstance.from_config(str(dagster_home))
    except Exception:  # noqa: BLE001 - storage not created yet
        return {}
    try:
        beats: dict[str, Any] = instance.get_daemon_heartbeats()
        return {k: float(v.timestamp) for k, v in beats.items()}
    except Exception:  # noqa: BLE001 - tables still being created by the daemon
        return {}
    finally:
        instance.dispose()
