"""Ray Serve backend: the escape hatch for models Triton cannot serve.

Each version is its own Ray Serve application (``{model_id}__v{version}`` at the route prefix
of the same name), so versions load, warm and unload independently, exactly as on Triton.
Every application speaks the KServe v2 inference protocol under its prefix (JSON, plus
Triton's binary tensor extension), so the gateway forwards to Ray and to Triton identically and
an unmodified tritonclient works against either. Local Ray is the default; ``RAY_ADDRESS`` (or
``address``) points at a cluster, whose workers must have this package installed and see the
artifact path (a shared filesystem): replicas do not fetch from the artifact store themselves.

Weights are verified against the version's sha256 twice: here, before anything is deployed,
and again inside the replica right before loading, so a replica restarted later never loads
bytes that changed on disk in between.
"""

import importlib
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelops.artifacts import ArtifactStore, LocalArtifactStore, sha256_file
from modelops.errors import IntegrityError, ModelopsError, NotFoundError, SpecError
from modelops.spec import Framework, ModelVersion
from serving.routing import BackendKind, Endpoint

__all__ = [
    "RayServeBackend",
    "V2Tensor",
    "V2RequestedOutput",
    "V2InferRequest",
    "V2InferResponse",
    "TensorSpec",
    "V2Model",
    "V2Error",
    "app_name",
    "load_v2_model",
    "PYTHON_LOADER_KEY",
]

PYTHON_LOADER_KEY = "python_loader"
"""Signature key naming a ``module:function`` that takes the verified artifact path and
returns ``predict(inputs: dict[str, ndarray]) -> dict[str, ndarray]``."""

_APP_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}__v[0-9]+$")

# KServe v2 datatypes and their numpy equivalents; BYTES travels as JSON strings.
_V2_TO_NP: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
_NP_TO_V2: dict[str, str] = {np.dtype(t).name: k for k, t in _V2_TO_NP.items() if k != "BYTES"}
_ONNX_TO_V2 = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def app_name(model_id: str, version: int) -> str:
    """The Ray Serve application (and backend model) name of one version."""
    return f"{model_id}__v{version}"


# --------------------------------------------------------------------------- KServe v2 schema


class _V2(BaseModel):
    model_config = ConfigDict(extra="ignore")


class V2Tensor(_V2):
    """A tensor as JSON `data`, or (binary extension) as `parameters.binary_data_size` bytes."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2RequestedOutput(_V2):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(_V2):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None


class V2InferResponse(_V2):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2Tensor]


class TensorSpec(BaseModel):
    """One input or output as a v2 metadata entry; -1 marks a variable dimension."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    datatype: str
    shape: list[int]


class V2Error(ModelopsError):
    """A v2 request the model cannot answer; `status` is the HTTP status to return."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _VersionInfo(BaseModel):
    """What a replica needs to know about its version: small, so it pickles cheaply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str
    version: int
    framework: Framework
    weights_sha256: str
    signature: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, v: ModelVersion) -> "_VersionInfo":
        return cls(
            model_id=v.model_id,
            version=v.version,
            framework=v.framework,
            weights_sha256=v.weights_hash,
            signature=v.signature,
        )


# --------------------------------------------------------------------------- model runners

Predict = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class V2Model:
    """A loaded model behind the v2 protocol; pure numpy, so it is testable without Ray."""

    def __init__(
        self,
        name: str,
        version: int,
        platform: str,
        predict: Predict,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        weights_sha256: str,
        strict_inputs: bool,
    ) -> None:
        self.name = name
        self.version = version
        self.platform = platform
        self.predict = predict
        self.inputs = inputs
        self.outputs = outputs
        self.weights_sha256 = weights_sha256
        # Strict when the inputs are declared (by the ONNX graph or the signature): a name,
        # datatype or shape the model does not take is the client's mistake, a 400 as on Triton.
        self.strict_inputs = strict_inputs

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [str(self.version)],
            "platform": self.platform,
            "inputs": [s.model_dump() for s in self.inputs],
            "outputs": [s.model_dump() for s in self.outputs],
            "parameters": {"weights_sha256": self.weights_sha256},
        }

    def infer(self, body: Any) -> dict[str, Any]:
        """Answer one JSON v2 request body; raises V2Error(400) for any client mistake."""
        response, blobs = self._infer(body, b"")
        if blobs:
            raise V2Error(400, "binary outputs need the binary tensor extension; use handle()")
        return response

    def handle(self, body: bytes, header_length: int | None = None) -> tuple[bytes, int | None]:
        """Answer raw request bytes, with Triton's binary tensor data extension.

        `header_length` is the request's Inference-Header-Content-Length: the JSON header is
        that many bytes and the input tensors' raw bytes follow it. The answer is the response
        bytes and, when outputs went binary, the length of its JSON header (for the same
        response header); that is what unmodified tritonclient clients send and expect.
        """
        if header_length is None:
            head, tail = body, b""
        elif 0 <= header_length <= len(body):
            head, tail = body[:header_length], body[header_length:]
        else:
            raise V2Error(400, f"Inference-Header-Content-Length {header_length} is out of range")
        try:
            parsed = json.loads(head)
        except ValueError:
            raise V2Error(400, "request header is not JSON") from None
        response, blobs = self._infer(parsed, tail)
        payload = json.dumps(response, separators=(",", ":")).encode()
        if not blobs:
            return payload, None
        return payload + b"".join(blobs), len(payload)

    def _infer(self, body: Any, binary: bytes) -> tuple[dict[str, Any], list[bytes]]:
        try:
            req = V2InferRequest.model_validate(body)
        except Exception as exc:  # pydantic's ValidationError, or a non-dict body
            raise V2Error(400, f"malformed v2 inference request: {exc}") from None
        feeds: dict[str, np.ndarray] = {}
        offset = 0
        for t in req.inputs:
            size = (t.parameters or {}).get("binary_data_size")
            if size is not None:
                if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                    raise V2Error(400, f"input {t.name}: binary_data_size {size} overruns body")
                feeds[t.name] = _decode_binary(t, binary[offset : offset + size])
                offset += size
            else:
                feeds[t.name] = _decode(t)
        if len(feeds) != len(req.inputs):
            raise V2Error(400, "an input name appears more than once")
        if offset != len(binary):
            raise V2Error(400, f"{len(binary) - offset} bytes after the last binary input")
        if self.strict_inputs:
            self._check_inputs(feeds)
        try:
            results = self.predict(feeds)
        except V2Error:
            raise
        except Exception as exc:
            # The model rejected these tensors (wrong rank, wrong width): the caller's input.
            raise V2Error(400, f"model {self.name} could not run on these inputs: {exc}") from None
        all_binary = bool((req.parameters or {}).get("binary_data_output"))
        wanted = (
            [
                (o.name, bool((o.parameters or {}).get("binary_data", all_binary)))
                for o in req.outputs
            ]
            if req.outputs
            else [(n, all_binary) for n in results]
        )
        unknown = [n for n, _ in wanted if n not in results]
        if unknown:
            raise V2Error(
                400, f"unknown output(s) {unknown}; model {self.name} has {sorted(results)}"
            )
        outputs, blobs = [], []
        for n, as_binary in wanted:
            tensor = _encode(n, np.asarray(results[n]))
            if as_binary:
                blob = _to_binary(np.asarray(results[n]), tensor.datatype)
                tensor = tensor.model_copy(
                    update={"data": None, "parameters": {"binary_data_size": len(blob)}}
                )
                blobs.append(blob)
            outputs.append(tensor)
        response = V2InferResponse(
            model_name=self.name, model_version=str(self.version), id=req.id, outputs=outputs
        ).model_dump(exclude_none=True)
        return response, blobs

    def _check_inputs(self, feeds: dict[str, np.ndarray]) -> None:
        expected = {s.name: s for s in self.inputs}
        unknown = sorted(set(feeds) - set(expected))
        missing = sorted(set(expected) - set(feeds))
        if unknown or missing:
            raise V2Error(
                400,
                f"model {self.name} takes inputs {sorted(expected)}; "
                f"unknown {unknown}, missing {missing}",
            )
        for name, arr in feeds.items():
            spec = expected[name]
            got = "BYTES" if arr.dtype == np.object_ else _NP_TO_V2.get(arr.dtype.name)
            if got != spec.datatype:
                raise V2Error(400, f"input {name} must have datatype {spec.datatype}, got {got}")
            if len(spec.shape) != arr.ndim or any(
                d != -1 and d != a for d, a in zip(spec.shape, arr.shape, strict=True)
            ):
                raise V2Error(
                    400, f"input {name} must have shape {spec.shape}, got {list(arr.shape)}"
                )


def _decode(t: V2Tensor) -> np.ndarray:
    if t.data is None:
        raise V2Error(400, f"input {t.name}: no data and no binary_data_size")
    dtype = _V2_TO_NP.get(t.datatype)
    if dtype is None:
        raise V2Error(400, f"input {t.name}: unknown datatype {t.datatype!r}")
    if any(d < 0 for d in t.shape):
        raise V2Error(400, f"input {t.name}: shape {t.shape} has a negative dimension")
    try:
        arr = np.asarray(t.data, dtype=dtype).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise V2Error(400, f"input {t.name}: data is not {t.datatype}: {exc}") from None
    if arr.size != math.prod(t.shape):
        raise V2Error(400, f"input {t.name}: {arr.size} values do not fill shape {t.shape}")
    return arr.reshape(t.shape)


def _decode_binary(t: V2Tensor, raw: bytes) -> np.ndarray:
    """Raw little-endian values; BYTES elements are each a uint32 length, then the bytes."""
    dtype = _V2_TO_NP.get(t.datatype)
    if dtype is None:
        raise V2Error(400, f"input {t.name}: unknown datatype {t.datatype!r}")
    if any(d < 0 for d in t.shape):
        raise V2Error(400, f"input {t.name}: shape {t.shape} has a negative dimension")
    n = math.prod(t.shape)
    if t.datatype == "BYTES":
        items, pos = [], 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise V2Error(400, f"input {t.name}: truncated BYTES element")
            size = int.from_bytes(raw[pos : pos + 4], "little")
            items.append(raw[pos + 4 : pos + 4 + size])
            pos += 4 + size
        if pos != len(raw) or len(items) != n:
            raise V2Error(400, f"input {t.name}: {len(items)} BYTES elements for shape {t.shape}")
        return np.array(items, dtype=np.object_).reshape(t.shape)
    dt = np.dtype(dtype).newbyteorder("<")
    if len(raw) != n * dt.itemsize:
        raise V2Error(
            400, f"input {t.name}: {len(raw)} bytes do not hold shape {t.shape} of {t.datatype}"
        )
    return np.frombuffer(raw, dtype=dt).astype(np.dtype(dtype)).reshape(t.shape)


def _to_binary(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for v in arr.reshape(-1):
            b = v if isinstance(v, bytes) else str(v).encode()
            parts.append(len(b).to_bytes(4, "little") + b)
        return b"".join(parts)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def _encode(name: str, arr: np.ndarray) -> V2Tensor:
    if arr.dtype == np.object_ or arr.dtype.kind in "SU":
        data = [v.decode() if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
        return V2Tensor(name=name, shape=list(arr.shape), datatype="BYTES", data=data)
    datatype = _NP_TO_V2.get(arr.dtype.name)
    if datatype is None:
        raise V2Error(500, f"output {name} has dtype {arr.dtype} with no v2 datatype")
    return V2Tensor(
        name=name, shape=list(arr.shape), datatype=datatype, data=arr.reshape(-1).tolist()
    )


def _signature_specs(signature: Mapping[str, Any], key: str) -> list[TensorSpec]:
    """Read `inputs`/`outputs` of a version signature as full v2 shapes.

    The signature is the one the Triton repository writer reads: `dims` is one example's
    shape and the batch dimension is implicit, so the v2 shape is [-1, *dims].
    """
    specs = []
    for i, item in enumerate(signature.get(key) or []):
        if not isinstance(item, Mapping) or "name" not in item or "dims" not in item:
            raise SpecError(f"signature.{key}[{i}] must be a mapping with name, datatype, dims")
        datatype = str(item.get("datatype") or "FP32").upper()
        if datatype not in _V2_TO_NP:
            raise SpecError(f"signature.{key}[{i}] has unknown datatype {datatype!r}")
        shape = [-1, *(int(d) for d in item["dims"])]
        specs.append(TensorSpec(name=str(item["name"]), datatype=datatype, shape=shape))
    return specs


def _onnx_model(name: str, mv: _VersionInfo, path: Path) -> V2Model:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # replicas share a small machine; scale out, not up
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def spec(arg: Any) -> TensorSpec:
        shape = [d if isinstance(d, int) else -1 for d in arg.shape]
        return TensorSpec(name=arg.name, datatype=_ONNX_TO_V2.get(arg.type, "FP32"), shape=shape)

    out_names = [o.name for o in sess.get_outputs()]

    def predict(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(out_names, sess.run(out_names, feeds), strict=True))

    return V2Model(
        name,
        mv.version,
        "onnxruntime_onnx",
        predict,
        [spec(a) for a in sess.get_inputs()],
        [spec(a) for a in sess.get_outputs()],
        mv.weights_sha256,
        strict_inputs=True,
    )


def _torchscript_model(name: str, mv: _VersionInfo, path: Path) -> V2Model:
    import torch

    torch.set_num_threads(1)
    module = torch.jit.load(str(path), map_location="cpu").eval()
    declared = _signature_specs(mv.signature, "inputs")
    inputs = declared or [TensorSpec(name="INPUT__0", datatype="FP32", shape=[-1, -1])]
    outputs = _signature_specs(mv.signature, "outputs")
    order = [s.name for s in inputs]

    def predict(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in order if n not in feeds]
        if missing or len(feeds) != len(order):
            raise V2Error(400, f"model {name} takes inputs {order}; got {sorted(feeds)}")
        with torch.inference_mode():
            result = module(*(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in order))
        tensors = list(result) if isinstance(result, tuple | list) else [result]
        names = [s.name for s in outputs] or [f"OUTPUT__{i}" for i in range(len(tensors))]
        if len(names) != len(tensors):
            raise V2Error(500, f"model {name} returned {len(tensors)} outputs, signature {names}")
        return {n: t.detach().cpu().numpy() for n, t in zip(names, tensors, strict=True)}

    return V2Model(
        name,
        mv.version,
        "pytorch_libtorch",
        predict,
        inputs,
        outputs,
        mv.weights_sha256,
        strict_inputs=bool(declared),
    )


def _python_model(name: str, mv: _VersionInfo, path: Path, ref: str) -> V2Model:
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(f"{PYTHON_LOADER_KEY} {ref!r} must look like 'package.module:function'")
    try:
        loader = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise NotFoundError(f"{PYTHON_LOADER_KEY} {ref!r} cannot be imported: {exc}") from None
    predict = loader(path)
    if not callable(predict):
        raise SpecError(f"{PYTHON_LOADER_KEY} {ref!r} must return a predict callable")
    inputs = _signature_specs(mv.signature, "inputs")
    return V2Model(
        name,
        mv.version,
        "python",
        predict,
        inputs,
        _signature_specs(mv.signature, "outputs"),
        mv.weights_sha256,
        strict_inputs=bool(inputs),
    )


def load_v2_model(info: _VersionInfo | ModelVersion, artifact_path: Path) -> V2Model:
    """Verify the artifact's sha256, then load it; the replica calls this at startup."""
    mv = info if isinstance(info, _VersionInfo) else _VersionInfo.of(info)
    actual = sha256_file(artifact_path)
    if actual != mv.weights_sha256:
        raise IntegrityError(
            f"{artifact_path} has sha256 {actual}, but {mv.model_id} v{mv.version} was "
            f"registered with {mv.weights_sha256}; refusing to load it"
        )
    name = app_name(mv.model_id, mv.version)
    ref = mv.signature.get(PYTHON_LOADER_KEY)
    if ref:
        return _python_model(name, mv, artifact_path, str(ref))
    if mv.framework is Framework.onnx:
        return _onnx_model(name, mv, artifact_path)
    if mv.framework is Framework.pytorch:
        return _torchscript_model(name, mv, artifact_path)
    raise SpecError(
        f"Ray Serve cannot load framework {mv.framework.value!r} for {name}: it serves ONNX, "
        f"TorchScript, or any version whose signature names a {PYTHON_LOADER_KEY} "
        "'module:function'"
    )


# --------------------------------------------------------------------------- Ray Serve app


def _build_app(
    name: str,
    info: _VersionInfo,
    artifact_path: str,
    ray_actor_options: dict[str, Any],
) -> Any:
    """A one-replica Serve application speaking KServe v2 under its route prefix."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from ray import serve
    from starlette.concurrency import run_in_threadpool

    api = FastAPI(title=name)

    @serve.deployment(
        name="v2",
        num_replicas=1,
        ray_actor_options=ray_actor_options,
        graceful_shutdown_wait_loop_s=0.5,
        graceful_shutdown_timeout_s=5.0,
        health_check_period_s=2.0,
    )
    @serve.ingress(api)
    class V2Deployment:
        def __init__(self) -> None:
            self.model = load_v2_model(info, Path(artifact_path))

        def _known(self, model: str) -> JSONResponse | None:
            if model != self.model.name:
                return JSONResponse(
                    {"error": f"unknown model {model!r}; this endpoint serves {self.model.name}"},
                    status_code=404,
                )
            return None

        @api.get("/v2/health/live")
        def live(self) -> dict[str, bool]:
            return {"live": True}

        @api.get("/v2/health/ready")
        def ready(self) -> dict[str, bool]:
            return {"ready": True}

        @api.get("/v2/models/{model}")
        def metadata(self, model: str) -> Any:
            return self._known(model) or self.model.metadata()

        @api.get("/v2/models/{model}/ready")
        def model_ready(self, model: str) -> Any:
            return self._known(model) or {"name": model, "ready": True}

        @api.post("/v2/models/{model}/infer")
        async def infer(self, model: str, request: Request) -> Any:
            unknown = self._known(model)
            if unknown is not None:
                return unknown
            raw_len = request.headers.get("inference-header-content-length")
            try:
                header_length = int(raw_len) if raw_len is not None else None
                body = await request.body()
                payload, out_len = await run_in_threadpool(self.model.handle, body, header_length)
            except ValueError:
                return JSONResponse({"error": "bad Inference-Header-Content-Length"}, 400)
            except V2Error as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            if out_len is None:
                return Response(payload, media_type="application/json")
            return Response(
                payload,
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(out_len)},
            )

    return V2Deployment.bind()


# --------------------------------------------------------------------------- backend


class RayServeBackend:
    """Deploys, undeploys and inspects versions as Ray Serve applications."""

    def __init__(
        self,
        address: str | None = None,
        http_port: int | None = None,
        *,
        http_host: str = "127.0.0.1",
        store: ArtifactStore | None = None,
        cache_dir: Path | None = None,
        replica_cpus: float = 0.25,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.http_port = http_port
        self.http_host = http_host
        self.store = store
        self.cache_dir = cache_dir
        # A fractional CPU so several versions (prod, canary, warm N-1) fit on a small host.
        self.replica_cpus = replica_cpus
        self.runtime_env = runtime_env
        self._base_url: str | None = None

    # -- connection

    def connect(self) -> str:
        """Join (or start) Ray and Serve; returns the HTTP base URL of Serve's proxy."""
        if self._base_url is not None:
            return self._base_url
        import ray
        from ray import serve

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False)
        http: dict[str, Any] = {"host": self.http_host}
        if self.http_port:
            http["port"] = self.http_port
        serve.start(http_options=http)  # joins a running Serve as is; only warns on a mismatch
        port = _serve_http_port()
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "") else self.http_host
        self._base_url = f"http://{host}:{port}"
        return self._base_url

    @property
    def base_url(self) -> str:
        return self.connect()

    # -- lifecycle

    def endpoint(self, version: ModelVersion) -> Endpoint:
        name = app_name(version.model_id, version.version)
        return Endpoint(
            version=version.version,
            backend=BackendKind.ray,
            url=f"{self.base_url}/{name}",
            backend_model=name,
            feature_contract_ref=version.feature_contract_ref,
        )

    def deploy(
        self,
        version: ModelVersion,
        artifact_path: Path | None = None,
        *,
        wait: bool = True,
        timeout: float = 120.0,
        runtime_env: dict[str, Any] | None = None,
    ) -> Endpoint:
        """Deploy one version as its own application; a no-op if it already serves these weights.

        Without `artifact_path` the weights come from the backend's store (verified on read).
        With `wait=False` it returns at once; poll `is_ready` (or call `wait_ready`).
        """
        from ray import serve

        name = app_name(version.model_id, version.version)
        endpoint = self.endpoint(version)
        if self.is_ready(name) and self._serving_sha(endpoint) == version.weights_hash:
            return endpoint
        path = self._verified_path(version, artifact_path)
        info = _VersionInfo.of(version)
        _check_loadable(info)
        options: dict[str, Any] = {"num_cpus": self.replica_cpus}
        env = runtime_env if runtime_env is not None else self.runtime_env
        if env:
            options["runtime_env"] = env
        target = serve.RunTarget(
            target=_build_app(name, info, str(path), options), name=name, route_prefix=f"/{name}"
        )
        serve.run_many([target], wait_for_applications_running=False)
        if wait:
            self.wait_ready(name, timeout)
        return endpoint

    def wait_ready(self, name: str, timeout: float = 120.0) -> None:
        """Poll until the application runs; a failed deploy raises with Ray's own message."""
        deadline = time.monotonic() + timeout
        while True:
            status, message = self._status(name)
            if status == "RUNNING":
                return
            if status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise ModelopsError(f"Ray Serve could not deploy {name}: {message}")
            if status is None:
                raise NotFoundError(f"Ray Serve has no application {name}")
            if time.monotonic() > deadline:
                raise ModelopsError(f"{name} was not ready on Ray Serve within {timeout:.0f} s")
            time.sleep(0.1)

    def undeploy(self, name: str, *, wait: bool = True) -> None:
        """Delete an application; unknown names are a no-op, so reconciling is idempotent."""
        from ray import serve

        self.connect()
        if name in self.deployed():
            serve.delete(name, _blocking=wait)

    def deployed(self) -> set[str]:
        """Versions this plane has on Ray Serve (other applications are not ours to touch)."""
        return {n for n, (status, _) in self._statuses().items() if status != "DELETING"}

    def is_ready(self, name: str) -> bool:
        return self._status(name)[0] == "RUNNING"

    # -- internals

    def _statuses(self) -> dict[str, tuple[str, str]]:
        from ray import serve

        self.connect()
        apps = serve.status().applications
        return {
            n: (str(getattr(a.status, "value", a.status)), a.message)
            for n, a in apps.items()
            if _APP_RE.match(n)
        }

    def _status(self, name: str) -> tuple[str | None, str]:
        return self._statuses().get(name, (None, ""))

    def _serving_sha(self, endpoint: Endpoint) -> str | None:
        import httpx

        try:
            r = httpx.get(f"{endpoint.url}/v2/models/{endpoint.backend_model}", timeout=5)
            if not r.is_success:
                return None
            return str(r.json().get("parameters", {}).get("weights_sha256"))
        except (httpx.HTTPError, ValueError):
            return None

    def _verified_path(self, version: ModelVersion, artifact_path: Path | None) -> Path:
        if artifact_path is not None:
            path = Path(artifact_path).absolute()
            if not path.is_file():
                raise NotFoundError(f"artifact {path} does not exist")
        elif self.store is None:
            raise SpecError(
                f"no artifact for {version.model_id} v{version.version}: pass artifact_path "
                "or give the backend an artifact store"
            )
        elif isinstance(self.store, LocalArtifactStore):
            path = self.store.path_for(version.weights_hash)  # content addressed: stable
        else:
            cache = self.cache_dir or Path(os.environ.get("MODELOPS_HOME", ".modelops")) / "ray"
            path = self.store.fetch(version.weights_hash, cache.absolute() / version.weights_hash)
        actual = sha256_file(path)
        if actual != version.weights_hash:
            raise IntegrityError(
                f"{path} has sha256 {actual}, but {version.model_id} v{version.version} was "
                f"registered with {version.weights_hash}; refusing to deploy it"
            )
        return path


def _check_loadable(info: _VersionInfo) -> None:
    """Refuse up front what a replica would only fail on later, with a clearer message."""
    if info.signature.get(PYTHON_LOADER_KEY):
        return
    if info.framework not in (Framework.onnx, Framework.pytorch):
        raise SpecError(
            f"Ray Serve cannot load framework {info.framework.value!r} for "
            f"{app_name(info.model_id, info.version)}: it serves ONNX, TorchScript, or a "
            f"signature with {PYTHON_LOADER_KEY} 'module:function'"
        )


def _serve_http_port() -> int:
    """The port Serve's proxy really listens on (a running Serve keeps its own)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    return int(client.http_config.port)
