"""Operate a Triton server over HTTP, and decide which old versions it keeps warm.

`TritonBackend` wraps `tritonclient.http` and turns Triton's errors into typed modelops
errors with one-line messages: the controller and the gateway branch on the type, and an
operator reads the line. `RetentionPolicy` is pure logic: it says which versions of a model
stay loaded, so a rollback is a routing flip to a warm version instead of a load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelops.desired import DesiredState
from modelops.errors import (
    BackendUnavailable,
    ModelLoadError,
    ModelopsError,
    NotFoundError,
    SpecError,
)
from modelops.spec import ModelVersion, State
from serving.triton.repo import parse_triton_model_name, triton_model_name

__all__ = [
    "BackendUnavailable",
    "ModelLoadError",
    "TensorMeta",
    "ModelMetadata",
    "ModelStatistics",
    "TritonBackend",
    "RetentionDecision",
    "RetentionPolicy",
    "promoted_at",
]


class _M(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TensorMeta(_M):
    """A tensor as Triton reports it: the shape includes the batch dim (-1) when batched."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(_M):
    name: str
    versions: list[str] = Field(default_factory=list)
    platform: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]


class ModelStatistics(_M):
    """Counters summed over a model's versions.

    `inference_count` counts examples (a request of batch 8 adds 8), `success_count` counts
    requests, and `execution_count` counts model runs, so batching shows as fewer executions.
    """

    name: str
    inference_count: int
    execution_count: int
    success_count: int
    fail_count: int
    queue_ns: int
    compute_infer_ns: int
    last_inference_ms: int


def _transport_error(exc: BaseException) -> bool:
    """Connection-level failures of the HTTP client (socket errors, closed or garbled
    responses), as opposed to Triton answering with an error."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    return type(exc).__module__.startswith(("geventhttpclient", "gevent"))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class TritonBackend:
    """One Triton server, addressed by its HTTP endpoint (with or without http://).

    Not thread-safe: tritonclient.http runs on gevent, so each thread or process that calls
    the server should own its own TritonBackend.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 300.0,
        concurrency: int = 1,
        connect_timeout_s: float | None = None,
    ) -> None:
        """`timeout_s` bounds a call (a load can take minutes); `connect_timeout_s` (default
        the same) bounds reaching the server, which a long-running caller keeps short."""
        self.url = url.removeprefix("http://").rstrip("/")
        self.timeout_s = timeout_s
        self.connect_timeout_s = timeout_s if connect_timeout_s is None else connect_timeout_s
        self.concurrency = concurrency
        self._client: Any = None

    def __repr__(self) -> str:
        return f"TritonBackend({self.url!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            import tritonclient.http as httpclient

            self._client = httpclient.InferenceServerClient(
                self.url,
                concurrency=self.concurrency,
                connection_timeout=self.connect_timeout_s,
                network_timeout=self.timeout_s,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> TritonBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Map transport failures to BackendUnavailable; Triton's own errors pass through."""
        from tritonclient.utils import InferenceServerException

        try:
            yield
        except InferenceServerException:
            raise
        except Exception as exc:  # noqa: BLE001 - the transport's many error types
            if not _transport_error(exc):
                raise
            # A broken connection leaves the gevent pool unusable: start afresh next call.
            self._client = None
            raise BackendUnavailable(
                f"Triton at {self.url} is unreachable during {what}: {_one_line(exc)}"
            ) from None

    def server_ready(self) -> bool:
        """False, not an error, when the server is down: callers poll this."""
        try:
            with self._calls("ready check"):
                return bool(self.client.is_server_ready())
        except BackendUnavailable:
            return False

    def repository_index(self) -> list[dict[str, Any]]:
        """Retried once on a fresh connection: a keep-alive socket to a restarted server is
        closed under us, which says nothing about the server now."""
        for attempt in (1, 2):
            try:
                return list(
                    self._server_call("repository index", self.client.get_model_repository_index)
                )
            except BackendUnavailable:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _server_call(self, what: str, fn: Callable[[], Any]) -> Any:
        """A call about the server rather than one model: Triton's own error (a server still
        starting, or shutting down) is BackendUnavailable too, so callers see typed errors."""
        from tritonclient.utils import InferenceServerException

        try:
            with self._calls(what):
                return fn()
        except InferenceServerException as exc:
            raise BackendUnavailable(
                f"Triton at {self.url} failed the {what}: {_one_line(exc.message())}"
            ) from None

    def loaded(self) -> set[str]:
        """Names of models with a READY version, as the repository index reports them."""
        return {e["name"] for e in self.repository_index() if e.get("state") == "READY"}

    def _index_entry(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.repository_index() if e.get("name") == name), None)

    def load(self, name: str) -> float:
        """Load, or reload if already loaded, a repository entry; returns the seconds it took."""
        from tritonclient.utils import InferenceServerException

        if self._index_entry(name) is None:
            raise NotFoundError(
                f"model {name!r} is not in the model repository of Triton at {self.url}"
            )
        started = time.perf_counter()
        try:
            with self._calls(f"load of {name!r}"):
                self.client.load_model(name)
        except InferenceServerException as exc:
            raise ModelLoadError(
                f"Triton at {self.url} failed to load {name!r}: {self._load_reason(name, exc)}"
            ) from None
        return time.perf_counter() - started

    def ensure_loaded(self, name: str) -> float:
        """Load only if not already serving: Triton reloads on every load call, which a
        reconciler that runs twice must not trigger. Returns 0.0 when nothing was done."""
        if self.is_ready(name):
            return 0.0
        return self.load(name)

    def _load_reason(self, name: str, exc: Exception) -> str:
        """Triton's index holds the backend's own reason; the HTTP error only says 'failed'."""
        from tritonclient.utils import InferenceServerException

        try:
            entry = self._index_entry(name) or {}
        except (InferenceServerException, BackendUnavailable):
            entry = {}
        reason = str(entry.get("reason") or (exc.message() if hasattr(exc, "message") else exc))
        # The Python backend appends a traceback after "At:"; the reason is what precedes it.
        reason = _one_line(reason.split("\n\nAt:")[0])
        return reason if len(reason) <= 400 else reason[:397] + "..."

    def unload(self, name: str, *, wait: bool = True) -> None:
        """Unload a model (a no-op for a name Triton does not serve).

        With `wait`, return only once Triton no longer routes requests to it.
        """
        from tritonclient.utils import InferenceServerException

        try:
            with self._calls(f"unload of {name!r}"):
                self.client.unload_model(name)
        except InferenceServerException as exc:
            if self._index_entry(name) is None:
                raise NotFoundError(
                    f"model {name!r} is not in the model repository of Triton at {self.url}"
                ) from None
            raise ModelopsError(
                f"Triton at {self.url} failed to unload {name!r}: {_one_line(exc.message())}"
            ) from None
        if not wait:
            return
        # Triton finishes in-flight requests before it drops the model: poll, with a deadline.
        deadline = time.monotonic() + self.timeout_s
        while self.is_ready(name):
            if time.monotonic() > deadline:
                raise ModelopsError(
                    f"Triton at {self.url} still serves {name!r} {self.timeout_s:.0f} s after "
                    "its unload"
                )
            time.sleep(0.02)

    def is_ready(self, name: str) -> bool:
        return bool(
            self._server_call(f"readiness of {name!r}", lambda: self.client.is_model_ready(name))
        )

    def _model_call(self, name: str, what: str, fn: Callable[[], Any]) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            with self._calls(f"{what} of {name!r}"):
                return fn()
        except InferenceServerException as exc:
            raise self._model_error(name, what, exc) from None

    def _model_error(self, name: str, what: str, exc: Any) -> ModelopsError:
        message = _one_line(exc.message())
        status = str(exc.status() or "")
        lowered = message.lower()
        if any(
            marker in lowered
            for marker in ("unknown model", "not found", "no available version", "not available")
        ):
            return NotFoundError(
                f"model {name!r} is not loaded on Triton at {self.url} ({what}): {message}"
            )
        if status.startswith("4"):
            return SpecError(f"Triton at {self.url} rejected the {what} of {name!r}: {message}")
        return ModelopsError(f"Triton at {self.url} failed the {what} of {name!r}: {message}")

    def metadata(self, name: str) -> ModelMetadata:
        raw = self._model_call(name, "metadata", lambda: self.client.get_model_metadata(name))
        return ModelMetadata.model_validate(raw)

    def config(self, name: str) -> dict[str, Any]:
        """The configuration Triton actually loaded, as parsed by Triton."""
        return dict(self._model_call(name, "config", lambda: self.client.get_model_config(name)))

    def statistics(self, name: str) -> ModelStatistics:
        raw = self._model_call(
            name, "statistics", lambda: self.client.get_inference_statistics(name)
        )
        rows = raw.get("model_stats", [])
        if not rows:
            raise NotFoundError(f"Triton at {self.url} has no statistics for model {name!r}")

        def ns(row: dict[str, Any], key: str) -> int:
            return int(row.get("inference_stats", {}).get(key, {}).get("ns", 0))

        def count(row: dict[str, Any], key: str) -> int:
            return int(row.get("inference_stats", {}).get(key, {}).get("count", 0))

        return ModelStatistics(
            name=name,
            inference_count=sum(int(r.get("inference_count", 0)) for r in rows),
            execution_count=sum(int(r.get("execution_count", 0)) for r in rows),
            success_count=sum(count(r, "success") for r in rows),
            fail_count=sum(count(r, "fail") for r in rows),
            queue_ns=sum(ns(r, "queue") for r in rows),
            compute_infer_ns=sum(ns(r, "compute_infer") for r in rows),
            last_inference_ms=max(int(r.get("last_inference", 0)) for r in rows),
        )

    def infer(
        self,
        name: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one request; tensors travel as binary, outputs default to all of the model's."""
        import tritonclient.http as httpclient
        from tritonclient.utils import np_to_triton_dtype

        if not inputs:
            raise SpecError(f"inference on {name!r} needs at least one input tensor")
        infer_inputs = []
        for key, value in inputs.items():
            array = np.ascontiguousarray(value)
            tensor = httpclient.InferInput(key, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array, binary_data=True)
            infer_inputs.append(tensor)
        requested = (
            [httpclient.InferRequestedOutput(o, binary_data=True) for o in outputs]
            if outputs
            else None
        )
        result = self._model_call(
            name, "inference", lambda: self.client.infer(name, infer_inputs, outputs=requested)
        )
        names = outputs or [o["name"] for o in result.get_response().get("outputs", [])]
        return {o: result.as_numpy(o) for o in names}


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def promoted_at(version: ModelVersion, slice_: str) -> datetime | None:
    """When `version` last became prod in `slice_`, from its state history."""
    times = [
        _aware(c.ts)
        for c in version.state_history
        if c.slice == slice_ and c.state is State.PROMOTED
    ]
    return max(times) if times else None


class RetentionDecision(BaseModel):
    """Which versions of one (model, slice) stay loaded, each with the reason why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str
    slice: str
    keep: dict[int, str]
    release_at: datetime | None = Field(
        default=None, description="when a kept previous prod leaves its window: decide again then"
    )

    def names(self) -> set[str]:
        return {triton_model_name(self.model_id, v) for v in self.keep}


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RetentionPolicy:
    """Keep the previous prod warm so a rollback is a routing flip, not a load.

    Every version the desired state routes to (prod, canary, A/B arms, shadow) stays loaded. The
    current prod is therefore loaded for as long as a candidate is in canary or A/B, which is
    the version a failed candidate rolls back to. After a promotion, the version it replaced
    (the desired state's rollback target) stays loaded for `window_s` from the promotion time;
    if that time is unknown it stays, because unloading cannot be undone without a load.
    """

    window_s: float
    clock: Callable[[], datetime] = field(default=_utcnow)

    def decide(self, desired: DesiredState, *, promoted_at: datetime | None) -> RetentionDecision:
        keep: dict[int, str] = {}

        def add(version: int | None, reason: str) -> None:
            if version is not None and version not in keep:
                keep[version] = reason

        candidate = desired.canary.version if desired.canary else None
        if desired.ab_test:
            arms = [a.version for a in desired.ab_test.arms if a.version != desired.prod_version]
            candidate = candidate or (arms[0] if arms else None)
        if candidate is not None and desired.prod_version is not None:
            add(desired.prod_version, f"prod; rollback target while v{candidate} is tested")
        else:
            add(desired.prod_version, "prod")
        if desired.canary:
            add(desired.canary.version, f"canary at {desired.canary.percent}%")
        for arm in desired.ab_test.arms if desired.ab_test else []:
            add(arm.version, f"A/B arm at {arm.percent}% in layer {desired.ab_test.layer}")
        if desired.shadow:
            add(desired.shadow.version, f"shadow at {desired.shadow.percent}%")

        release_at = None
        previous = desired.rollback_target
        if previous is not None and previous not in keep:
            if promoted_at is None:
                add(previous, "previous prod; promotion time unknown, kept to be safe")
            else:
                until = _aware(promoted_at) + timedelta(seconds=self.window_s)
                if _aware(self.clock()) < until:
                    add(previous, f"previous prod; retained until {until.isoformat()}")
                    release_at = until
        return RetentionDecision(
            model_id=desired.model_id, slice=desired.slice, keep=keep, release_at=release_at
        )

    @staticmethod
    def unloads(loaded: Iterable[str], decisions: Iterable[RetentionDecision]) -> set[str]:
        """Loaded names of the decided models that no slice keeps.

        A version prod in one slice and stale in another stays; names of models without a
        decision, or not written by this plane, are left alone.
        """
        kept: dict[str, set[int]] = {}
        for d in decisions:
            kept.setdefault(d.model_id, set()).update(d.keep)
        out: set[str] = set()
        for name in loaded:
            parsed = parse_triton_model_name(name)
            if parsed is None or parsed[0] not in kept:
                continue
            if parsed[1] not in kept[parsed[0]]:
                out.add(name)
        return out
