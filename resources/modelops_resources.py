"""The resources themselves; see the package docstring for the rules they follow."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

if TYPE_CHECKING:
    import numpy as np

    from modelops.artifacts import ArtifactStore
    from modelops.contracts import FeatureContract, FileSchemaSource
    from modelops.evidence import SloMeasurement
    from modelops.registry import Registry
    from modelops.spec import ModelVersion
    from serving.controller import Controller, ReconcileStep
    from serving.predlog import PredictionLogReader
    from serving.triton.backend import TritonBackend
    from serving.vllm_backend import VLLMClient


_CACHE_LOCK = threading.Lock()
_REGISTRIES: dict[str, Registry] = {}
_READERS: dict[str, PredictionLogReader] = {}


def modelops_home() -> Path:
    """`$MODELOPS_HOME`, or ./.modelops: the one directory the embedded defaults live in."""
    return Path(os.environ.get("MODELOPS_HOME") or ".modelops").resolve()


class RegistryResource(dg.ConfigurableResource):
    """The model registry: the only way Dagster code changes a model's state."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; unset means the SQLite file $MODELOPS_HOME/registry.db. "
        "Pass a PostgreSQL URL through dg.EnvVar so its password stays out of code.",
    )
    service_key: str | None = Field(
        default=None,
        description="PEM of the Ed25519 key sensors and jobs sign with (the audit chain "
        "anchors); pass dg.EnvVar('MODELOPS_SERVICE_KEY'), never a literal",
    )
    service_actor: str = Field(
        default="service:dagster",
        description="the service actor that key is registered to (`modelops actor add NAME "
        "--role service --public-key FILE`)",
    )

    def anchor_heads(self, artifacts: ArtifactStore) -> Any:
        """Sign every audit chain head with the service key into the artifact store."""
        from modelops.errors import SpecError
        from modelops.identity import SigningKey

        if not self.service_key:
            raise SpecError("no service key: set MODELOPS_SERVICE_KEY (a PEM from keygen)")
        key = SigningKey.from_pem(self.service_key, source="the service key")
        return self.get().anchor_heads(artifacts, key, signer=self.service_actor)

    def get(self) -> Registry:
        """One Registry (one engine, one pool) per URL per process: the daemon builds a fresh
        resource every sensor tick, and an engine per tick would leak connections."""
        from modelops.registry import Registry

        key = self.url or f"sqlite:///{modelops_home() / 'registry.db'}"
        with _CACHE_LOCK:
            reg = _REGISTRIES.get(key)
            if reg is None:
                reg = _REGISTRIES[key] = Registry(key)
        return reg


class ArtifactStoreResource(dg.ConfigurableResource):
    """Content-addressed weights: a local directory, or S3 in production."""

    uri: str | None = Field(
        default=None,
        description="file:///path, a plain path, or s3://bucket[/prefix]; unset means "
        "$MODELOPS_HOME/artifacts. S3 credentials come from the usual AWS environment.",
    )
    _store: Any = PrivateAttr(default=None)

    def get(self) -> ArtifactStore:
        if self._store is None:
            from modelops.artifacts import open_store

            self._store = open_store(self.uri or str(modelops_home() / "artifacts"))
        return self._store


class FeatureSchemaResource(dg.ConfigurableResource):
    """The feature store's current schema, as versioned files (Feast in production)."""

    directory: str | None = Field(
        default=None,
        description="directory of v1.yaml, v2.yaml, ...; unset means $MODELOPS_HOME/schemas",
    )

    def source(self) -> FileSchemaSource:
        from modelops.contracts import FileSchemaSource

        return FileSchemaSource(self.directory or modelops_home() / "schemas")


class PredictionLogResource(dg.ConfigurableResource):
    """Read-only access to what the gateways logged: the evidence sensors decide on."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the prediction log; unset means "
        "$MODELOPS_HOME/predictions.db (SQLite in WAL mode, written by the gateway)",
    )

    def reader(self) -> PredictionLogReader:
        """Cached per URL per process, for the same reason as the registry."""
        from serving.predlog import PredictionLogReader

        key = self.url or _predlog_default()
        with _CACHE_LOCK:
            reader = _READERS.get(key)
            if reader is None:
                reader = _READERS[key] = PredictionLogReader(key)
        return reader


def _triton_repository(path: str | None) -> Path:
    return Path(path) if path else modelops_home() / "triton-repo"


def _predlog_default() -> str:
    return f"sqlite:///{modelops_home() / 'predictions.db'}"


class TritonResource(dg.ConfigurableResource):
    """A Triton server's HTTP API, plus the repository directory our writer fills."""

    url: str = Field(
        default="127.0.0.1:8000", description="Triton HTTP address, HOST:PORT (no scheme)"
    )
    repository: str | None = Field(
        default=None,
        description="the model repository Triton was started on; unset means "
        "$MODELOPS_HOME/triton-repo",
    )
    _backend: Any = PrivateAttr(default=None)

    def repository_path(self) -> Path:
        return _triton_repository(self.repository)

    def backend(self) -> TritonBackend:
        if self._backend is None:
            from serving.triton.backend import TritonBackend

            self._backend = TritonBackend(self.url)
        return self._backend

    def measure_slo(
        self,
        version: ModelVersion,
        *,
        store: ArtifactStore,
        sample: np.ndarray,
        requests: int,
        contract: FeatureContract | None = None,
        warmup: int = 5,
    ) -> SloMeasurement:
        """The offline latency/memory probe against this Triton and its repository (see
        `serving.triton.slo.measure_slo`): the one gate that needs the real server."""
        from serving.triton.slo import measure_slo

        return measure_slo(
            version,
            store=store,
            triton_url=self.url,
            repository=self.repository_path(),
            sample=sample,
            requests=requests,
            contract=contract,
            warmup=warmup,
        )


class RayServeResource(dg.ConfigurableResource):
    """The Ray Serve escape hatch: models Triton cannot serve."""

    address: str | None = Field(
        default=None,
        description="Ray cluster address (RAY_ADDRESS); unset starts or joins a local Ray",
    )
    http_port: int | None = Field(default=None, description="Serve's HTTP proxy port")
    _backend: Any = PrivateAttr(default=None)

    def backend(self, store: ArtifactStore | None = None) -> Any:
        if self._backend is None:
            from serving.ray_backend import RayServeBackend

            self._backend = RayServeBackend(
                address=self.address, http_port=self.http_port, store=store
            )
        return self._backend


class VLLMResource(dg.ConfigurableResource):
    """An OpenAI-compatible vLLM server (GPU hosts; tests use a stand-in)."""

    base_url: str = Field(
        default="http://127.0.0.1:8100", description="vLLM server base URL, e.g. http://host:8000"
    )
    api_key: str | None = Field(
        default=None, description="bearer token; pass dg.EnvVar('VLLM_API_KEY'), never a literal"
    )
    timeout_s: float = Field(default=60.0, gt=0, description="request timeout")

    def client(self) -> VLLMClient:
        from serving.vllm_backend import VLLMClient

        return VLLMClient(self.base_url, timeout=self.timeout_s, api_key=self.api_key)


class ControllerResource(dg.ConfigurableResource):
    """The deployment controller, run one pass at a time inside action runs.

    Passes serialize on a file lock, so two runs acting on different models at once never
    race (one pass unloading what the other just loaded). Each pass reads the desired state
    afresh under the lock, so the last pass always reflects the last committed transition.
    """

    triton_url: str = Field(default="127.0.0.1:8000", description="Triton HTTP HOST:PORT")
    repository: str | None = Field(
        default=None,
        description="Triton model repository; unset means $MODELOPS_HOME/triton-repo",
    )
    gateways: list[str] = Field(
        default_factory=list, description="gateway base URLs to push routing tables to"
    )
    rendering: str = Field(default="portable", description="portable (CPU) or native")
    retention_s: float = Field(
        default=3600.0, ge=0, description="keep the last good version loaded this long"
    )
    lock_file: str | None = Field(
        default=None, description="pass lock; unset means $MODELOPS_HOME/controller.lock"
    )
    lock_timeout_s: float = Field(default=120.0, gt=0, description="give up waiting after this")
    token: str | None = Field(
        default=None,
        description="bearer token for gateway pushes and route reads; pass "
        "dg.EnvVar('MODELOPS_GATEWAY_TOKEN'), never a literal; unset means the environment "
        "variable, else $MODELOPS_HOME/gateway.token (the gateway's zero-config token)",
    )

    def build(
        self, registry: Registry, store: ArtifactStore, *, timeout_s: float | None = None
    ) -> Controller:
        """`timeout_s` bounds each backend and gateway call (default: the controller's own)."""
        from serving.controller import triton_controller

        timeouts = (
            {"http_timeout_s": timeout_s, "backend_timeout_s": timeout_s} if timeout_s else {}
        )
        return triton_controller(
            registry,
            store,
            triton_url=self.triton_url,
            repository=Path(self.repository)
            if self.repository
            else modelops_home() / "triton-repo",
            gateways=self.gateways,
            rendering=self.rendering,
            retention_s=self.retention_s,
            token=self.token,
            **timeouts,
        )

    def drift(
        self,
        registry: Registry,
        store: ArtifactStore,
        *,
        timeout_s: float = 3.0,
        log: Any = None,
    ) -> list[str]:
        """What differs between desired and actual state (`Controller.drift`), read without
        the pass lock; each backend and gateway gets `timeout_s` to answer, so a hung one
        cannot stall a sensor tick."""
        return self.build(registry, store, timeout_s=timeout_s).drift(log=log)

    @contextmanager
    def locked(self) -> Iterator[None]:
        path = Path(self.lock_file) if self.lock_file else modelops_home() / "controller.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        with open(path, "a+") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        from modelops.errors import ConflictError

                        raise ConflictError(
                            f"controller lock {path} held for over {self.lock_timeout_s:.0f}s"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def reconcile(self, registry: Registry, store: ArtifactStore) -> list[ReconcileStep]:
        """One full pass under the lock: load, route, push, unload."""
        with self.locked():
            return self.build(registry, store).reconcile_once()


def _env(name: str) -> Any:
    """An `EnvVar` when set, so the value (maybe a password) is read at run time and never
    shown in the UI; None otherwise, which means the embedded default."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """The embedded defaults; every value can be overridden from the environment."""
    gateways = [g for g in os.environ.get("MODELOPS_GATEWAYS", "").split(",") if g]
    triton = os.environ.get("MODELOPS_TRITON_URL", "127.0.0.1:8000")
    return {
        "registry": RegistryResource(
            url=_env("MODELOPS_REGISTRY_URL"), service_key=_env("MODELOPS_SERVICE_KEY")
        ),
        "artifacts": ArtifactStoreResource(uri=_env("MODELOPS_ARTIFACTS")),
        "feature_schemas": FeatureSchemaResource(directory=_env("MODELOPS_SCHEMAS")),
        "predlog": PredictionLogResource(url=_env("MODELOPS_PREDLOG_URL")),
        "triton": TritonResource(url=triton),
        "ray_serve": RayServeResource(address=_env("RAY_ADDRESS")),
        "vllm": VLLMResource(
            base_url=os.environ.get("MODELOPS_VLLM_URL", "http://127.0.0.1:8100"),
            api_key=_env("VLLM_API_KEY"),
        ),
        "controller": ControllerResource(
            triton_url=triton, gateways=gateways, token=_env("MODELOPS_GATEWAY_TOKEN")
        ),
    }
