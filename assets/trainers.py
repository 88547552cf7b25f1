"""Trainers the fleet YAML names (`trainer: assets.trainers:train_gbdt_onnx`).

Each one trains a real model on (X, y), exports it in the format its Triton backend loads and
returns a `TrainedModel`: the artifact file the repository writer takes, an in-process
predict function (the reference the served model must match) and the I/O signature.

Exports are byte-deterministic for a fixed seed and data where the framework allows it
(producer metadata cleared, SavedModels tarred with fixed times and owners), so the same
training gives the same sha256 and registration stays idempotent.
"""

from __future__ import annotations

import importlib
import io
import os
import tarfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelops.errors import SpecError
from modelops.spec import Framework

__all__ = [
    "N_FEATURES",
    "INPUT",
    "OUTPUT",
    "TrainedModel",
    "Trainer",
    "ctr_signature",
    "pack_dir_deterministic",
    "train_gbdt_onnx",
    "train_torch_mlp",
    "train_keras_savedmodel",
    "load_trainer",
    "check_trainer_params",
]

N_FEATURES = 8
INPUT = "features"
OUTPUT = "probability"

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class TrainedModel:
    """One exported model: the blob to store and the function it must compute."""

    framework: Framework
    artifact: Path
    predict: Predict
    signature: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


Trainer = Callable[..., TrainedModel]


def ctr_signature(n_features: int = N_FEATURES) -> dict[str, Any]:
    """Dims are per example; the batch dimension is implicit (see serving.triton.repo)."""
    return {
        "inputs": [{"name": INPUT, "datatype": "FP32", "dims": [n_features]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "dims": [1]}],
    }


def pack_dir_deterministic(src: Path, dest: Path) -> Path:
    """Tar a directory so equal contents give equal bytes, hence one sha256 per model.

    Members are sorted, and times, owners and modes are fixed; no compression, because gzip
    headers carry a timestamp of their own.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(src.rglob("*"), key=lambda p: p.relative_to(src).as_posix()):
            rel = path.relative_to(src).as_posix()
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    dest.write_bytes(buf.getvalue())
    return dest


def _xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise SpecError(f"training data must be X [n, d] with y [n]; got {x.shape} and {y.shape}")
    return x, y


def train_gbdt_onnx(
    x: np.ndarray,
    y: np.ndarray,
    workdir: Path,
    *,
    seed: int = 0,
    n_estimators: int = 40,
    max_depth: int = 3,
    learning_rate: float = 0.1,
) -> TrainedModel:
    """A GradientBoostingClassifier exported with skl2onnx, served as P(click) [batch, 1].

    skl2onnx with zipmap=False emits `label` and `probabilities` [batch, 2]; one Slice node
    turns the latter into the positive-class column, and it becomes the graph's only output.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _xy(x, y)
    n_features = x.shape[1]
    clf = GradientBoostingClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        learning_rate=learning_rate,
        random_state=seed,
    ).fit(x, y)
    proto = convert_sklearn(
        clf,
        initial_types=[(INPUT, FloatTensorType([None, n_features]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    graph = proto.graph
    probs = next(o.name for o in graph.output if o.name != "label")
    for name, value in (("mo_starts", 1), ("mo_ends", 2), ("mo_axes", 1)):
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], [value]))
    graph.node.append(
        helper.make_node("Slice", [probs, "mo_starts", "mo_ends", "mo_axes"], [OUTPUT])
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, 1]))
    onnx.checker.check_model(proto)
    # Deterministic metadata (skl2onnx names the graph with a random uuid): the same training
    # gives the same bytes and sha256.
    proto.producer_version = ""
    proto.graph.name = "ctr_gbdt"
    workdir.mkdir(parents=True, exist_ok=True)
    artifact = workdir / "ctr_gbdt.onnx"
    artifact.write_bytes(proto.SerializeToString())

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(artifact), opts, providers=["CPUExecutionProvider"])

    def predict(batch: np.ndarray) -> np.ndarray:
        """The trained scikit-learn model itself, not the export: a faulty export shows."""
        return clf.predict_proba(np.asarray(batch, dtype=np.float32))[:, 1:2].astype(np.float32)

    def onnxruntime_predict(batch: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT], {INPUT: np.asarray(batch, dtype=np.float32)})[0]

    return TrainedModel(
        framework=Framework.onnx,
        artifact=artifact,
        predict=predict,
        signature=ctr_signature(n_features),
        extra={"onnxruntime_predict": onnxruntime_predict},
    )


def train_torch_mlp(
    x: np.ndarray,
    y: np.ndarray,
    workdir: Path,
    *,
    seed: int = 0,
    epochs: int = 150,
    hidden: int = 32,
    lr: float = 0.01,
) -> TrainedModel:
    """A two-layer MLP trained full-batch with Adam, saved as TorchScript (torch.jit.script)."""
    import torch
    from torch import nn

    x, y = _xy(x, y)
    n_features = x.shape[1]
    torch.manual_seed(seed)

    class CTRNet(nn.Module):
        def __init__(self, n_in: int, width: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, width // 2), nn.ReLU()
            )
            self.head = nn.Linear(width // 2, 1)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.head(self.body(features)))

    net = CTRNet(n_features, hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
    loss_fn = nn.BCELoss()
    loss = torch.tensor(0.0)
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(net(xt), yt)
        loss.backward()
        opt.step()
    net.eval()
    workdir.mkdir(parents=True, exist_ok=True)
    artifact = workdir / "ctr_mlp.pt"
    with warnings.catch_warnings():
        # Deprecated upstream in favour of torch.export, but TorchScript is the format
        # Triton's pytorch_libtorch backend loads.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(net), str(artifact))

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(np.asarray(batch, dtype=np.float32))).numpy()

    return TrainedModel(
        framework=Framework.pytorch,
        artifact=artifact,
        predict=predict,
        signature=ctr_signature(n_features),
        extra={"final_loss": float(loss.item())},
    )


def train_keras_savedmodel(
    x: np.ndarray,
    y: np.ndarray,
    workdir: Path,
    *,
    seed: int = 0,
    epochs: int = 3,
    hidden: int = 16,
    lr: float = 0.01,
) -> TrainedModel:
    """A Keras MLP exported as a SavedModel whose serving_default signature speaks our names.

    The signature maps `features` to `probability`, so both the native tensorflow_savedmodel
    backend and the portable Python backend bind tensors by the names in the version
    signature. The artifact is a deterministic tar of the SavedModel directory.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    x, y = _xy(x, y)
    n_features = x.shape[1]
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(n_features,), name=INPUT),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy")
    model.fit(x, y.astype(np.float32), epochs=epochs, batch_size=256, verbose=0)

    workdir.mkdir(parents=True, exist_ok=True)
    export_dir = workdir / "ctr_keras.savedmodel"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda features: {OUTPUT: model(features, training=False)},
        input_signature=[tf.TensorSpec(shape=(None, n_features), dtype=tf.float32, name=INPUT)],
    )
    archive.write_out(str(export_dir), verbose=False)
    artifact = pack_dir_deterministic(export_dir, workdir / "ctr_keras.savedmodel.tar")

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(np.asarray(batch, dtype=np.float32), training=False))

    return TrainedModel(
        framework=Framework.tensorflow,
        artifact=artifact,
        predict=predict,
        signature=ctr_signature(n_features),
        extra={"export_dir": export_dir},
    )


def load_trainer(path: str) -> Trainer:
    """Resolve `module.path:function`; a wrong name says which part is missing."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise SpecError(f"trainer {path!r} is not allowed; use module.path:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"trainer module {module_name!r} cannot be imported: {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SpecError(f"trainer {path!r}: module {module_name!r} has no function {attr!r}")
    return fn


def check_trainer_params(fn: Trainer, params: dict[str, Any], path: str) -> None:
    """Refuse parameters the trainer does not take, before any training time is spent."""
    import inspect

    sig = inspect.signature(fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    allowed = sorted(
        n
        for n, p in sig.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "seed"
    )
    unknown = sorted(set(params) - set(allowed) - {"seed"})
    if unknown:
        raise SpecError(
            f"trainer {path} does not take trainer_params {unknown}; allowed: {allowed + ['seed']}"
        )
