"""Supervise a real `tritonserver` process on CPU.

The embedded default takes the binary that the `nvidia-pytriton` wheel ships, with its Python
backend; production points `--triton-bin` (or MODELOPS_TRITON_BIN) at a GPU build with native
backends. Ports are flags, so tests run several servers side by side.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from modelops.errors import ModelopsError, NotFoundError

__all__ = ["TritonLayout", "TritonServer", "free_port", "find_layout"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TritonLayout:
    """Where the binary, its backends and its shared libraries live."""

    binary: Path
    backends: Path
    libs: Path | None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        ld = [str(self.libs)] if self.libs else []
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir:
            ld.append(libdir)
        if env.get("LD_LIBRARY_PATH"):
            ld.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(ld)
        # The Python backend stub embeds an interpreter that ignores PYTHONPATH and finds its
        # prefix through `python3` on PATH: putting this environment's bin first makes it use
        # this venv (its numpy<2, onnxruntime, torch, tensorflow and our own code).
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        return env


def find_layout() -> TritonLayout:
    """Locate tritonserver: MODELOPS_TRITON_BIN, else the wheel's embedded build."""
    override = os.environ.get("MODELOPS_TRITON_BIN")
    if override:
        binary = Path(override)
        if not binary.is_file():
            raise NotFoundError(f"MODELOPS_TRITON_BIN={override} is not a file")
        return TritonLayout(binary, binary.parent.parent / "backends", None)
    try:
        import pytriton  # the wheel is only a carrier for the server binary
    except ImportError:
        raise NotFoundError(
            "no tritonserver: install the serving extra (pip install 'modelops[serving]') "
            "or set MODELOPS_TRITON_BIN"
        ) from None
    root = Path(pytriton.__file__).resolve().parent / "tritonserver"
    binary = root / "bin" / "tritonserver"
    backends = root / "backends"
    stub_dst = backends / "python" / "triton_python_backend_stub"
    if not stub_dst.exists():
        ver = f"{sys.version_info.major}.{sys.version_info.minor}"
        stub_src = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
        if not stub_src.exists():
            raise NotFoundError(f"the Triton wheel has no Python backend stub for Python {ver}")
        shutil.copy2(stub_src, stub_dst)
    libs = root.parent.parent / "nvidia_pytriton.libs"
    return TritonLayout(binary, backends, libs if libs.is_dir() else None)


@dataclass
class TritonServer:
    """One tritonserver process in explicit model-control mode."""

    repository: Path
    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    log_path: Path | None = None
    layout: TritonLayout | None = None
    extra_args: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.url}"

    def command(self) -> list[str]:
        layout = self.layout or find_layout()
        return [
            str(layout.binary),
            f"--model-repository={self.repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={layout.backends}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--log-verbose=0",
            "--exit-timeout-secs=5",
            *self.extra_args,
        ]

    def start(self, timeout: float = 60.0) -> TritonServer:
        self.layout = self.layout or find_layout()
        self.repository.mkdir(parents=True, exist_ok=True)
        for name in ("http_port", "grpc_port", "metrics_port"):
            if not getattr(self, name):
                setattr(self, name, free_port())
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            self.command(),
            env=self.layout.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ModelopsError(
                    f"tritonserver exited with code {self._proc.returncode} during startup"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise ModelopsError(f"tritonserver did not become ready within {timeout:.0f} s")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
