"""Triton Python-backend model that serves an ONNX, TorchScript or SavedModel artifact on CPU.

The repository writer copies this file verbatim to `<entry>/1/model.py` of every portable
entry, so it must stand alone: numpy, the framework it serves and Triton's
`triton_python_backend_utils`, nothing of ours. Which framework and which artifact come from
the entry's config parameters; tensor names and dtypes come from its input/output sections.

One session per model instance, loaded once in `initialize`; `execute` concatenates the
requests the dynamic batcher hands it, runs them as one batch and splits the result back.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TritonPythonModel", "load_runner", "Runner"]

Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]

_NP_DTYPES: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def _onnx_runner(
    artifact: Path, inputs: list[str], outputs: list[str], threads: int
) -> tuple[Runner, Any]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(artifact), opts, providers=["CPUExecutionProvider"])

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return list(session.run(outputs, dict(zip(inputs, arrays, strict=True))))

    return run, session


def _torch_runner(
    artifact: Path, inputs: list[str], outputs: list[str], threads: int
) -> tuple[Runner, Any]:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already fixed for this process; harmless
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream, but it is what Triton's libtorch backend reads,
        # so the portable rendering serves the very same file.
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(artifact), map_location="cpu")
    module.eval()

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        # from_numpy shares memory; Triton's input buffers are read-only, so copy those.
        tensors = [torch.from_numpy(np.require(a, requirements=["C", "W"])) for a in arrays]
        with torch.inference_mode():
            out = module(*tensors)
        if isinstance(out, dict):
            items = [out[name] for name in outputs]
        elif isinstance(out, list | tuple):
            items = list(out)
        else:
            items = [out]
        return [t.detach().cpu().numpy() for t in items]

    return run, module


def _tf_runner(
    artifact: Path, inputs: list[str], outputs: list[str], threads: int, signature_key: str
) -> tuple[Runner, Any, Path | None]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already initialised in this process; keep its pools
    scratch: Path | None = None
    model_dir = artifact
    if artifact.is_file():
        scratch = Path(tempfile.mkdtemp(prefix="modelops-savedmodel-"))
        with tarfile.open(artifact) as tar:
            tar.extractall(scratch, filter="data")
        model_dir = scratch
    loaded = tf.saved_model.load(str(model_dir))
    fn = loaded.signatures[signature_key]

    def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = fn(**{name: tf.constant(a) for name, a in zip(inputs, arrays, strict=True)})
        return [out[name].numpy() for name in outputs]

    # Keep `loaded` alive: the signature function does not own its variables.
    return run, loaded, scratch


def load_runner(
    framework: str,
    artifact: Path,
    inputs: list[str],
    outputs: list[str],
    *,
    threads: int = 1,
    signature_key: str = "serving_default",
) -> tuple[Runner, Any, Path | None]:
    """Load an artifact and return (run, handle, scratch dir to delete at shutdown).

    Also used outside Triton, so the adapter logic can be checked without a server.
    """
    if framework == "onnx":
        return (*_onnx_runner(artifact, inputs, outputs, threads), None)
    if framework == "pytorch":
        return (*_torch_runner(artifact, inputs, outputs, threads), None)
    if framework == "tensorflow":
        return _tf_runner(artifact, inputs, outputs, threads, signature_key)
    raise ValueError(
        f"framework {framework!r} is not served here; allowed: onnx, pytorch, tensorflow"
    )


class TritonPythonModel:
    """The Python backend's entry point; one object per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        framework = params.get("modelops.framework", "")
        artifact_name = params.get("modelops.artifact", "")
        threads = max(1, int(params.get("modelops.threads", "1") or 1))
        # Threading libraries read these once at import: set them before any import below.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        os.environ.setdefault("MKL_NUM_THREADS", str(threads))
        artifact = Path(args["model_repository"]) / args["model_version"] / artifact_name
        if not artifact_name or not artifact.exists():
            raise FileNotFoundError(f"artifact {artifact_name!r} not found in {artifact.parent}")
        self._inputs = [i["name"] for i in config["input"]]
        self._outputs = [o["name"] for o in config["output"]]
        self._out_dtypes = [_NP_DTYPES[o["data_type"]] for o in config["output"]]
        self._batched = int(config.get("max_batch_size", 0)) > 0
        self._run, self._handle, self._scratch = load_runner(
            framework,
            artifact,
            self._inputs,
            self._outputs,
            threads=threads,
            signature_key=params.get("modelops.signature_key", "serving_default"),
        )
        if params.get("modelops.warmup", "true").lower() != "false":
            self._warmup(config)

    def _warmup(self, config: dict[str, Any]) -> None:
        """Run a one-row batch at load time.

        The first calls pay for lazy initialisation (TorchScript profiling, TF tracing, ORT
        allocations); paying it here keeps it off the first user request after a load or a
        rollback. It also turns a signature that does not match the model into a load failure
        with a reason, instead of errors on live traffic.
        """
        if any(i["data_type"] == "TYPE_STRING" for i in config["input"]):
            return
        arrays = []
        for spec in config["input"]:
            dims = [1 if int(d) == -1 else int(d) for d in spec["dims"]]
            shape = [1, *dims] if self._batched else dims
            arrays.append(np.zeros(shape, dtype=_NP_DTYPES[spec["data_type"]]))
        for _ in range(2):
            outs = self._run(arrays)
        if len(outs) != len(self._outputs):
            raise ValueError(
                f"the model returns {len(outs)} outputs but the config declares "
                f"{len(self._outputs)}: {self._outputs}"
            )

    def _respond(self, arrays: Sequence[np.ndarray]) -> Any:
        pb = self._pb
        tensors = [
            pb.Tensor(name, np.ascontiguousarray(a, dtype=dt))
            for name, a, dt in zip(self._outputs, arrays, self._out_dtypes, strict=True)
        ]
        return pb.InferenceResponse(output_tensors=tensors)

    def _error(self, exc: BaseException) -> Any:
        pb = self._pb
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(message))

    def _run_one(self, request: Any) -> Any:
        pb = self._pb
        try:
            arrays = [pb.get_input_tensor_by_name(request, n).as_numpy() for n in self._inputs]
            return self._respond(self._run(arrays))
        except Exception as exc:  # one bad request must not fail its batch-mates
            return self._error(exc)

    def execute(self, requests: list[Any]) -> list[Any]:
        if len(requests) == 1 or not self._batched:
            return [self._run_one(r) for r in requests]
        pb = self._pb
        try:
            per_request = [
                [pb.get_input_tensor_by_name(r, n).as_numpy() for n in self._inputs]
                for r in requests
            ]
            sizes = [arrays[0].shape[0] for arrays in per_request]
            merged = [
                np.concatenate([arrays[i] for arrays in per_request])
                for i in range(len(self._inputs))
            ]
            outs = self._run(merged)
        except Exception:
            # Shapes that cannot be merged, or a failure caused by one request: fall back to
            # one run per request so each gets its own answer or its own error.
            return [self._run_one(r) for r in requests]
        cuts = np.cumsum(sizes)[:-1]
        parts = [np.split(o, cuts) for o in outs]
        return [self._respond([p[i] for p in parts]) for i in range(len(requests))]

    def finalize(self) -> None:
        self._run = None  # type: ignore[assignment]
        self._handle = None
        if getattr(self, "_scratch", None) is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
