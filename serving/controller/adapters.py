"""One adapter per runtime: what the controller asks of Triton, Ray Serve and vLLM."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from modelops.errors import BackendUnavailable, ModelLoadError, ModelopsError
from modelops.spec import ModelVersion
from serving.routing import BackendKind, Endpoint

__all__ = [
    "BACKEND_ERRORS",
    "RayAdapter",
    "ServingBackend",
    "TritonAdapter",
    "VLLMAdapter",
    "one_line",
]


class ServingBackend(Protocol):
    """What the controller needs from a runtime; one adapter per runtime."""

    kind: BackendKind

    def name_for(self, model_id: str, version: int) -> str: ...

    def present(self) -> set[str]:
        """Names that are loaded and ready right now (asked of the backend, not remembered)."""
        ...

    def ensure(self, version: ModelVersion) -> float:
        """Load the version if it is not ready; returns seconds spent loading (0 if none)."""
        ...

    def endpoint(self, version: ModelVersion) -> Endpoint: ...

    def remove(self, name: str) -> None: ...


class TritonAdapter:
    """Triton: write a verified repository entry, then load it over the HTTP API."""

    kind = BackendKind.triton

    def __init__(
        self,
        url: str,
        repository: Path,
        store: Any,
        rendering: str = "portable",
        contracts: Callable[[str], Any] | None = None,
        timeout_s: float = 300.0,
    ):
        from serving.triton.backend import TritonBackend
        from serving.triton.repo import RepositoryWriter

        self.url = url if url.startswith("http") else f"http://{url}"
        # A short connect timeout: a vanished host must fail the pass, not hang the loop.
        # `timeout_s` bounds each call (a load can take minutes; a drift probe wants seconds).
        self.client = TritonBackend(
            self.url.removeprefix("http://"), timeout_s=timeout_s, connect_timeout_s=10.0
        )
        self.writer = RepositoryWriter(Path(repository), store)
        self.rendering = rendering
        self.contracts = contracts or (lambda ref: None)

    def name_for(self, model_id: str, version: int) -> str:
        from serving.triton.repo import triton_model_name

        return triton_model_name(model_id, version)

    def present(self) -> set[str]:
        return self.client.loaded()

    def ensure(self, version: ModelVersion) -> float:
        name = self.name_for(version.model_id, version.version)
        if self.client.is_ready(name):
            return 0.0
        contract = (
            self.contracts(version.feature_contract_ref) if version.feature_contract_ref else None
        )
        self.writer.write(version, rendering=self.rendering, contract=contract)  # type: ignore[arg-type]
        return float(self.client.load(name))

    def endpoint(self, version: ModelVersion) -> Endpoint:
        return Endpoint(
            version=version.version,
            backend=BackendKind.triton,
            url=self.url,
            backend_model=self.name_for(version.model_id, version.version),
            feature_contract_ref=version.feature_contract_ref,
        )

    def remove(self, name: str) -> None:
        self.client.unload(name)
        self.writer.remove(name)


class RayAdapter:
    """Ray Serve, the escape hatch: one Serve application per version."""

    kind = BackendKind.ray

    def __init__(self, backend: Any, store: Any, workdir: Path):
        self.backend = backend
        self.store = store
        self.workdir = Path(workdir)
        self._endpoints: dict[str, Endpoint] = {}

    def name_for(self, model_id: str, version: int) -> str:
        return f"{model_id}__v{version}"

    def present(self) -> set[str]:
        return set(_ray_call("listing applications", self.backend.deployed, BackendUnavailable))

    def ensure(self, version: ModelVersion) -> float:
        name = self.name_for(version.model_id, version.version)
        if name in self.present() and name in self._endpoints:
            return 0.0
        t0 = time.perf_counter()
        path = self.store.fetch(version.weights_hash, self.workdir / version.weights_hash)
        self._endpoints[name] = _ray_call(
            f"deploy of {name!r}", lambda: self.backend.deploy(version, path), ModelLoadError
        )
        return time.perf_counter() - t0

    def endpoint(self, version: ModelVersion) -> Endpoint:
        """Remembered from the deploy, or derived: a restarted controller finds the
        applications already running and must still route to them."""
        name = self.name_for(version.model_id, version.version)
        ep = self._endpoints.get(name) or _ray_call(
            f"endpoint of {name!r}", lambda: self.backend.endpoint(version), BackendUnavailable
        )
        return ep.model_copy(update={"feature_contract_ref": version.feature_contract_ref})

    def remove(self, name: str) -> None:
        _ray_call(f"undeploy of {name!r}", lambda: self.backend.undeploy(name), BackendUnavailable)
        self._endpoints.pop(name, None)


def _ray_call(what: str, fn: Callable[[], Any], error: type[ModelopsError]) -> Any:
    """Ray's client raises its own exception types (and SystemExit when it loses the GCS);
    the controller branches on ours, so a lost cluster is one error on the pass."""
    try:
        return fn()
    except ModelopsError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - Ray's many error types
        raise error(
            f"Ray Serve failed during {what}: {type(exc).__name__}: {one_line(exc)}"
        ) from None


class VLLMAdapter:
    """vLLM: one supervised `vllm serve` process per LLM version, on a port of its own."""

    kind = BackendKind.vllm

    def __init__(self, launcher: tuple[str, ...] = ("vllm", "serve"), **args: Any):
        self.launcher = launcher
        self.args = args  # forwarded to VLLMArgs.from_runtime (gpu_memory_gb, weights_gb…)
        self._procs: dict[str, Any] = {}

    def name_for(self, model_id: str, version: int) -> str:
        return f"{model_id}__v{version}"

    def present(self) -> set[str]:
        return {name for name, p in self._procs.items() if p.healthy()}

    def ensure(self, version: ModelVersion) -> float:
        from serving.triton.server import free_port
        from serving.vllm_backend import VLLMArgs, VLLMProcess

        name = self.name_for(version.model_id, version.version)
        if name in self.present():
            return 0.0
        old = self._procs.pop(name, None)
        if old is not None:
            old.stop()
        t0 = time.perf_counter()
        args = VLLMArgs.from_runtime(version, port=free_port(), host="127.0.0.1", **self.args)
        self._procs[name] = VLLMProcess(args, launcher=self.launcher).start()
        return time.perf_counter() - t0

    def endpoint(self, version: ModelVersion) -> Endpoint:
        proc = self._procs[self.name_for(version.model_id, version.version)]
        ep = proc.endpoint(version.version)
        return ep.model_copy(update={"feature_contract_ref": version.feature_contract_ref})

    def remove(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.stop()


# What a backend call may raise for reasons outside this process: typed errors from our
# clients, and the OS's (a repository entry that cannot be written, a socket refused).
BACKEND_ERRORS = (ModelopsError, OSError)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
