"""vLLM backend: the LLM plane, driven through vLLM's own CLI and OpenAI-compatible HTTP API.

`VLLMArgs` turns a version's LLM runtime contract into a `vllm serve` argument list,
`VLLMProcess` launches and supervises that server (health from `/health` plus the served
name in `/v1/models`, restart with backoff on a crash), and `VLLMClient` speaks the
OpenAI-compatible routes. vLLM needs a GPU: it is the optional `llm` extra, installed on GPU
hosts only. On CPU hosts the launch command is overridable, which is how the tests run this
adapter against a stand-in server that speaks the same protocol.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from modelops.errors import ModelopsError, NotFoundError, SpecError
from modelops.spec import Framework, ModelVersion
from serving.routing import BackendKind, Endpoint

__all__ = [
    "VLLMArgs",
    "VLLMProcess",
    "VLLMClient",
    "VLLMState",
    "VLLMStatus",
    "VLLMError",
    "VLLMRequestError",
    "ContextLengthExceeded",
    "VLLMModelNotFound",
    "VLLMUnavailable",
    "served_model_name",
    "DEFAULT_GPU_MEMORY_GB",
    "MAX_GPU_MEMORY_UTILIZATION",
]

log = logging.getLogger(__name__)

DEFAULT_GPU_MEMORY_GB = 80.0
"""The GPU size assumed when the caller states none: one 80 GB accelerator."""

MAX_GPU_MEMORY_UTILIZATION = 0.95
"""Leave headroom for the CUDA context and other processes; vLLM's own default is 0.9."""


def served_model_name(model_id: str, version: int) -> str:
    """The name vLLM serves a version under: the same spelling as Triton and Ray Serve."""
    return f"{model_id}__v{version}"


# --------------------------------------------------------------------------- arguments


class VLLMArgs(BaseModel):
    """The `vllm serve` arguments this plane controls; anything else goes in `extra_args`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="weights: a local directory or a model id (positional)")
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)
    max_model_len: int = Field(ge=1, description="--max-model-len: prompt + completion tokens")
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_num_seqs: int | None = Field(default=None, ge=1)
    tokenizer: str | None = None
    tokenizer_revision: str | None = None
    speculative_config: dict[str, Any] | None = None
    extra_args: list[str] = Field(default_factory=list)

    @classmethod
    def from_runtime(
        cls,
        version: ModelVersion,
        *,
        port: int,
        host: str = "127.0.0.1",
        model: str | None = None,
        gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB,
        weights_gb: float | None = None,
        num_speculative_tokens: int = 5,
        served_name: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> VLLMArgs:
        """Render the LLM runtime contract of `version` for one GPU of `gpu_memory_gb`.

        - `max_context_length` becomes `--max-model-len`.
        - `mem_gb` is the version's whole GPU budget (weights, activations, KV cache), so
          `--gpu-memory-utilization` is mem_gb / gpu_memory_gb, rounded up to a hundredth.
        - With `weights_gb` known, what is left of the budget is the KV cache, and
          `--max-num-seqs` is how many full-context sequences it holds
          (kv_cache_gb_per_sequence each). Without it vLLM sizes its own batch.
        - `tokenizer_version` is `NAME@REVISION` (`--tokenizer`, `--tokenizer-revision`) or a
          bare revision of the model's own tokenizer.
        - `draft_model` becomes a draft-model `--speculative-config`.
        """
        label = f"{version.model_id} v{version.version}"
        llm = version.runtime_requirements.llm
        if version.framework is not Framework.vllm_engine or llm is None:
            raise SpecError(
                f"{label} is not an LLM version: vLLM needs framework 'vllm_engine' and "
                "runtime_requirements.llm"
            )
        if gpu_memory_gb <= 0:
            raise SpecError(f"gpu_memory_gb must be positive, got {gpu_memory_gb}")
        mem_gb = version.runtime_requirements.mem_gb
        utilization = math.ceil(mem_gb / gpu_memory_gb * 100) / 100
        if utilization > MAX_GPU_MEMORY_UTILIZATION:
            raise SpecError(
                f"{label} needs {mem_gb} GB of GPU memory; a {gpu_memory_gb} GB GPU allows at "
                f"most {MAX_GPU_MEMORY_UTILIZATION * gpu_memory_gb:.1f} GB "
                f"(gpu-memory-utilization <= {MAX_GPU_MEMORY_UTILIZATION})"
            )
        max_num_seqs = None
        if weights_gb is not None:
            kv_budget = mem_gb - weights_gb
            max_num_seqs = math.floor(kv_budget / llm.kv_cache_gb_per_sequence + 1e-9)
            if max_num_seqs < 1:
                raise SpecError(
                    f"{label}: {mem_gb} GB minus {weights_gb} GB of weights leaves "
                    f"{kv_budget:.2f} GB of KV cache, less than one sequence at full context "
                    f"({llm.kv_cache_gb_per_sequence} GB)"
                )
        tokenizer, sep, revision = llm.tokenizer_version.rpartition("@")
        if not sep:
            tokenizer, revision = "", llm.tokenizer_version
        speculative = None
        if llm.draft_model:
            speculative = {
                "model": llm.draft_model,
                "num_speculative_tokens": num_speculative_tokens,
                "method": "draft_model",
            }
        return cls(
            model=model or _local_weights(version.weights_uri),
            served_model_name=served_name or served_model_name(version.model_id, version.version),
            host=host,
            port=port,
            max_model_len=llm.max_context_length,
            gpu_memory_utilization=utilization,
            max_num_seqs=max_num_seqs,
            tokenizer=tokenizer or None,
            tokenizer_revision=revision or None,
            speculative_config=speculative,
            extra_args=list(extra_args),
        )

    def argv(self) -> list[str]:
        """Everything after `vllm serve`: the model, then flags in vLLM's own spelling."""
        out = [
            self.model,
            "--served-model-name",
            self.served_model_name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--max-model-len",
            str(self.max_model_len),
        ]
        if self.gpu_memory_utilization is not None:
            out += ["--gpu-memory-utilization", f"{self.gpu_memory_utilization:g}"]
        if self.max_num_seqs is not None:
            out += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.tokenizer:
            out += ["--tokenizer", self.tokenizer]
        if self.tokenizer_revision:
            out += ["--tokenizer-revision", self.tokenizer_revision]
        if self.speculative_config:
            out += ["--speculative-config", json.dumps(self.speculative_config, sort_keys=True)]
        return [*out, *self.extra_args]

    def command(self, launcher: Sequence[str] = ("vllm", "serve")) -> list[str]:
        return [*launcher, *self.argv()]

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


def _local_weights(uri: str) -> str:
    """vLLM reads a directory or a model id, not our URIs: strip file:// to a path."""
    if uri.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(uri).path)
    return uri


# --------------------------------------------------------------------------- errors


class VLLMError(ModelopsError):
    """Anything the vLLM server answered with an error."""

    def __init__(self, message: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class VLLMRequestError(VLLMError, SpecError):
    """A 4xx: the request was wrong (vLLM's BadRequestError and friends)."""


class ContextLengthExceeded(VLLMRequestError):
    """The prompt plus requested completion exceed the server's --max-model-len."""


class VLLMModelNotFound(VLLMError, NotFoundError):
    """The server does not serve that model name."""


class VLLMUnavailable(VLLMError):
    """No answer, or a 5xx: the server is down, starting or broken; the request may be retried."""


# --------------------------------------------------------------------------- client


class VLLMClient:
    """OpenAI-compatible calls to one vLLM server; bodies and answers pass through as JSON."""

    def __init__(self, base_url: str, *, timeout: float = 60.0, api_key: str | None = None):
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VLLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self) -> bool:
        try:
            return self._http.get("/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> list[str]:
        """The served model names (`/v1/models` ids)."""
        body = self._request("GET", "/v1/models")
        return [str(m["id"]) for m in body.get("data", [])]

    def completions(
        self, body: Mapping[str, Any] | None = None, /, **fields: Any
    ) -> dict[str, Any]:
        """POST /v1/completions with `body` (and/or keyword fields); returns vLLM's JSON."""
        return self._request("POST", "/v1/completions", _payload(body, fields))

    def chat(self, body: Mapping[str, Any] | None = None, /, **fields: Any) -> dict[str, Any]:
        """POST /v1/chat/completions with `body` (and/or keyword fields); returns vLLM's JSON."""
        return self._request("POST", "/v1/chat/completions", _payload(body, fields))

    def _request(
        self, method: str, path: str, payload: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            r = self._http.request(method, path, json=payload)
        except httpx.HTTPError as exc:
            raise VLLMUnavailable(f"vLLM at {self.base_url} did not answer: {exc}") from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.is_success and isinstance(data, dict):
            return data
        raise _error(r.status_code, data, r.text, f"{method} {self.base_url}{path}")


def _payload(body: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> dict[str, Any]:
    payload = {**(body or {}), **fields}
    if payload.get("stream"):
        raise SpecError("VLLMClient does not stream; send stream=false (the default)")
    return payload


def _error(status: int, data: Any, text: str, where: str) -> VLLMError:
    """Map vLLM's error body to a typed error; both of its shapes are read.

    Current vLLM nests the error, {"error": {"message", "type", "param", "code"}}; older
    releases sent the same fields flat, beside "object": "error".
    """
    info = data.get("error") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        info = data if isinstance(data, dict) else {}
    message = str(info.get("message") or text or f"HTTP {status}")
    kind = str(info.get("type") or "")
    full = f"{where}: {status} {kind}: {message}".replace(" : ", " ")
    if status == 404 or kind == "NotFoundError":
        return VLLMModelNotFound(full, status, data)
    if 400 <= status < 500:
        lowered = message.lower()
        if "maximum context length" in lowered or "max_model_len" in lowered:
            return ContextLengthExceeded(full, status, data)
        return VLLMRequestError(full, status, data)
    return VLLMUnavailable(full, status, data)


# --------------------------------------------------------------------------- process


class VLLMState(StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    RESTARTING = "RESTARTING"
    FAILED = "FAILED"  # gave up: too many restarts in a row


class VLLMStatus(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state: VLLMState
    served_model_name: str
    base_url: str
    pid: int | None = None
    restarts: int = 0
    last_exit_code: int | None = None
    message: str = ""


class VLLMProcess:
    """Launches `vllm serve` (or `launcher`) and keeps it serving.

    A supervisor thread polls the process and its health. A process that exits, or that stays
    unhealthy for `unhealthy_after` checks in a row after it had been healthy, is restarted
    with exponential backoff; after `max_restarts` restarts without a healthy spell of
    `stable_after_s` in between it gives up (FAILED) rather than flap forever.
    """

    def __init__(
        self,
        args: VLLMArgs,
        *,
        launcher: Sequence[str] = ("vllm", "serve"),
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 900.0,
        poll_interval: float = 1.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        max_restarts: int = 5,
        unhealthy_after: int = 3,
        stable_after_s: float = 300.0,
    ) -> None:
        self.args = args
        self.launcher = list(launcher)
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        # Loading weights and capturing CUDA graphs takes minutes for a large model.
        self.startup_timeout = startup_timeout
        self.poll_interval = poll_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_restarts = max_restarts
        self.unhealthy_after = unhealthy_after
        self.stable_after_s = stable_after_s
        self.client = VLLMClient(args.base_url, timeout=30.0)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = VLLMState.STOPPED
        self._restarts = 0
        self._streak = 0  # restarts since the last stable healthy spell
        self._last_exit: int | None = None
        self._message = ""
        self._healthy_since: float | None = None
        self._launched_at = 0.0

    # -- public

    @property
    def base_url(self) -> str:
        return self.args.base_url

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    @property
    def restarts(self) -> int:
        return self._restarts

    def command(self) -> list[str]:
        return self.args.command(self.launcher)

    def endpoint(self, version: int) -> Endpoint:
        return Endpoint(
            version=version,
            backend=BackendKind.vllm,
            url=self.base_url,
            backend_model=self.args.served_model_name,
        )

    def start(self, *, wait: bool = True, supervise: bool = True) -> VLLMProcess:
        """Launch the server; with `wait`, block until healthy (or raise with the reason)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self
            self._stop.clear()
            self._launch()
        if wait:
            try:
                self.wait_healthy(self.startup_timeout)
            except BaseException:
                self.stop()
                raise
        if supervise and self._thread is None:
            self._thread = threading.Thread(
                target=self._supervise, name=f"vllm-{self.args.served_model_name}", daemon=True
            )
            self._thread.start()
        return self

    def healthy(self) -> bool:
        """Serving: /health answers 200 and /v1/models lists the served model name."""
        if not self.client.health():
            return False
        try:
            return self.args.served_model_name in self.client.models()
        except VLLMError:
            return False

    def alive(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def wait_healthy(self, timeout: float) -> None:
        """Block until healthy. Unsupervised, an exit is final; supervised, a restart is awaited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                proc, state, supervised = self._proc, self._state, self._thread is not None
            if state is VLLMState.FAILED:
                raise VLLMUnavailable(f"{self._describe()} failed: {self._message}")
            if proc is None and not supervised:
                raise VLLMUnavailable(f"{self._describe()} is not running")
            code = proc.poll() if proc is not None else None
            if code is not None and not supervised:
                raise VLLMUnavailable(
                    f"{self._describe()} exited with code {code} during startup"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if proc is not None and code is None and self.healthy():
                self._mark_healthy()
                return
            time.sleep(0.1)
        raise VLLMUnavailable(f"{self._describe()} was not healthy within {timeout:.0f} s")

    def status(self) -> VLLMStatus:
        with self._lock:
            return VLLMStatus(
                state=self._state,
                served_model_name=self.args.served_model_name,
                base_url=self.base_url,
                pid=self._proc.pid if self._proc is not None else None,
                restarts=self._restarts,
                last_exit_code=self._last_exit,
                message=self._message,
            )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop supervising, then terminate the server's whole process group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            self._terminate(timeout)
            self._state = VLLMState.STOPPED
        self.client.close()
        self.client = VLLMClient(self.args.base_url, timeout=30.0)

    def __enter__(self) -> VLLMProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals

    def _describe(self) -> str:
        return f"vLLM server {self.args.served_model_name} ({self.base_url})"

    def _launch(self) -> None:
        out: Any = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            out = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child from here
        env = {**os.environ, **(self.env or {})}
        try:
            # Its own session: vLLM forks engine workers, and stop() must end them all.
            self._proc = subprocess.Popen(
                self.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except FileNotFoundError:
            raise NotFoundError(
                f"cannot launch {self.launcher[0]!r}: install the llm extra on a GPU host "
                "(pip install 'modelops[llm]') or pass launcher="
            ) from None
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self._state = VLLMState.STARTING
        self._launched_at = time.monotonic()
        self._healthy_since = None
        log.info("launched %s as pid %s", self._describe(), self._proc.pid)

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(10)
        else:
            _signal_group(proc, signal.SIGKILL)  # reap workers a crashed parent left behind
        self._last_exit = proc.returncode

    def _mark_healthy(self) -> None:
        with self._lock:
            if self._state is not VLLMState.HEALTHY:
                self._healthy_since = time.monotonic()
            self._state = VLLMState.HEALTHY
            self._message = ""

    def _supervise(self) -> None:
        failures = 0
        while not self._stop.wait(self.poll_interval):
            with self._lock:
                proc, state = self._proc, self._state
                if (
                    self._healthy_since is not None
                    and time.monotonic() - self._healthy_since >= self.stable_after_s
                ):
                    self._streak = 0
            if proc is None:
                continue
            code = proc.poll()
            if code is not None:
                self._restart(f"exited with code {code}")
                failures = 0
            elif self.healthy():
                failures = 0
                self._mark_healthy()
            elif state in (VLLMState.STARTING, VLLMState.RESTARTING):
                if time.monotonic() - self._launched_at > self.startup_timeout:
                    self._restart(f"not healthy within {self.startup_timeout:.0f} s of launch")
            else:
                failures += 1
                with self._lock:
                    self._state = VLLMState.UNHEALTHY
                    self._message = f"health check failed {failures} time(s) in a row"
                if failures >= self.unhealthy_after:
                    self._restart(f"unhealthy for {failures} checks")
                    failures = 0

    def _restart(self, reason: str) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            if self._streak >= self.max_restarts:
                self._terminate(10)
                self._state = VLLMState.FAILED
                self._message = f"gave up after {self._streak} restarts; last: {reason}"
                log.error("%s: %s", self._describe(), self._message)
                self._stop.set()
                return
            delay = min(self.backoff_max, self.backoff_initial * 2**self._streak)
            self._terminate(10)
            self._state = VLLMState.RESTARTING
            self._message = f"{reason}; restarting in {delay:.1f} s"
            log.warning("%s %s", self._describe(), self._message)
        if self._stop.wait(delay):
            return
        with self._lock:
            if self._stop.is_set():
                return
            try:
                self._launch()
            except ModelopsError as exc:
                self._state = VLLMState.FAILED
                self._message = str(exc)
                self._stop.set()
                return
            self._restarts += 1
            self._streak += 1


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
