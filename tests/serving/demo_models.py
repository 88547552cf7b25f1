"""Real, small demo models, one per Triton framework, trained on data generated here.

Plain functions so any test (or the benchmark) can build them: each builder trains a real model
on seeded numpy data, exports it in the format a Triton backend loads, and returns the artifact
file, an in-process predict function and the I/O signature the repository writer renders.

Import it as `demo_models` from tests under tests/serving (pytest puts that folder on sys.path),
or put tests/serving on sys.path first, as the benchmark does.
"""

from __future__ import annotations

import io
import os
import tarfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from modelops.artifacts import ArtifactStore
from modelops.spec import (
    DatasetRef,
    Framework,
    ModelVersion,
    RollbackClass,
    RuntimeRequirements,
    Tier,
)

__all__ = [
    "N_FEATURES",
    "DemoModel",
    "make_ctr_data",
    "pack_dir_deterministic",
    "build_onnx_ctr",
    "build_torch_mlp",
    "build_tf_savedmodel",
    "BUILDERS",
    "demo_version",
]

N_FEATURES = 8
INPUT = "features"
OUTPUT = "probability"

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass
class DemoModel:
    """One exported model: the blob the artifact store holds and what it should compute."""

    framework: Framework
    artifact: Path
    predict: Predict
    signature: dict[str, Any]
    sample: np.ndarray
    build_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> bytes:
        return self.artifact.read_bytes()


def _signature(n_features: int = N_FEATURES) -> dict[str, Any]:
    """Dims are per example; the batch dimension is implicit (see serving.triton_repo)."""
    return {
        "inputs": [{"name": INPUT, "datatype": "FP32", "dims": [n_features]}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "dims": [1]}],
    }


def make_ctr_data(
    n: int = 4000, n_features: int = N_FEATURES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A click-through-like task: clicks follow a nonlinear score of the features, plus noise.

    The interaction and threshold terms give trees and MLPs something to learn beyond a line.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    score = (
        1.2 * x[:, 0]
        - 0.8 * x[:, 1]
        + 0.9 * x[:, 2] * x[:, 3]
        + 1.5 * (x[:, 4] > 0.5)
        - 0.6 * np.abs(x[:, 5])
        - 1.0
    )
    p = 1.0 / (1.0 + np.exp(-score))
    y = (rng.random(n) < p).astype(np.int64)
    return x, y


def _sample(seed: int, batch: int = 16, n_features: int = N_FEATURES) -> np.ndarray:
    return np.random.default_rng(seed + 1000).normal(size=(batch, n_features)).astype(np.float32)


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


def build_onnx_ctr(workdir: Path, *, seed: int = 0) -> DemoModel:
    """A GradientBoostingClassifier exported with skl2onnx, served as P(click) [batch, 1].

    skl2onnx with zipmap=False emits `label` and `probabilities` [batch, 2]; one Slice node turns
    the latter into the positive-class column, and it becomes the graph's only output.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier

    t0 = time.perf_counter()
    x, y = make_ctr_data(seed=seed)
    clf = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=seed).fit(x, y)
    proto = convert_sklearn(
        clf,
        initial_types=[(INPUT, FloatTensorType([None, N_FEATURES]))],
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
    # Deterministic producer metadata: the same training gives the same bytes and sha256.
    proto.producer_version = ""
    workdir.mkdir(parents=True, exist_ok=True)
    artifact = workdir / "ctr_gbdt.onnx"
    artifact.write_bytes(proto.SerializeToString())

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(artifact), opts, providers=["CPUExecutionProvider"])

    def predict(batch: np.ndarray) -> np.ndarray:
        """The trained scikit-learn model itself, not the export: a faulty export shows."""
        x32 = np.asarray(batch, dtype=np.float32)
        return clf.predict_proba(x32)[:, 1:2].astype(np.float32)

    def onnxruntime_predict(batch: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT], {INPUT: np.asarray(batch, dtype=np.float32)})[0]

    return DemoModel(
        framework=Framework.onnx,
        artifact=artifact,
        predict=predict,
        signature=_signature(),
        sample=_sample(seed),
        build_seconds=time.perf_counter() - t0,
        extra={"onnxruntime_predict": onnxruntime_predict},
    )


def build_torch_mlp(workdir: Path, *, seed: int = 0) -> DemoModel:
    """A two-layer MLP trained with Adam, saved as TorchScript (torch.jit.script)."""
    import torch
    from torch import nn

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    x, y = make_ctr_data(seed=seed)

    class CTRNet(nn.Module):
        def __init__(self, n_features: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Linear(n_features, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU()
            )
            self.head = nn.Linear(16, 1)

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.head(self.body(features)))

    net = CTRNet(N_FEATURES)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
    loss_fn = nn.BCELoss()
    for _ in range(150):
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

    return DemoModel(
        framework=Framework.pytorch,
        artifact=artifact,
        predict=predict,
        signature=_signature(),
        sample=_sample(seed),
        build_seconds=time.perf_counter() - t0,
        extra={"final_loss": float(loss.item())},
    )


def build_tf_savedmodel(workdir: Path, *, seed: int = 0) -> DemoModel:
    """A Keras MLP exported as a SavedModel whose serving_default signature speaks our names.

    The signature maps `features` to `probability`, so both the native tensorflow_savedmodel
    backend and the portable Python backend bind tensors by the names in the version signature.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    t0 = time.perf_counter()
    keras.utils.set_random_seed(seed)
    x, y = make_ctr_data(seed=seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(N_FEATURES,), name=INPUT),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    model.fit(x, y.astype(np.float32), epochs=3, batch_size=256, verbose=0)

    workdir.mkdir(parents=True, exist_ok=True)
    export_dir = workdir / "ctr_keras.savedmodel"
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda features: {OUTPUT: model(features, training=False)},
        input_signature=[tf.TensorSpec(shape=(None, N_FEATURES), dtype=tf.float32, name=INPUT)],
    )
    archive.write_out(str(export_dir), verbose=False)
    artifact = pack_dir_deterministic(export_dir, workdir / "ctr_keras.savedmodel.tar")

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model(np.asarray(batch, dtype=np.float32), training=False))

    return DemoModel(
        framework=Framework.tensorflow,
        artifact=artifact,
        predict=predict,
        signature=_signature(),
        sample=_sample(seed),
        build_seconds=time.perf_counter() - t0,
        extra={"export_dir": export_dir},
    )


BUILDERS: dict[Framework, Callable[..., DemoModel]] = {
    Framework.onnx: build_onnx_ctr,
    Framework.pytorch: build_torch_mlp,
    Framework.tensorflow: build_tf_savedmodel,
}


def demo_version(
    demo: DemoModel,
    store: ArtifactStore,
    *,
    model_id: str = "ctr",
    version: int = 1,
    max_batch_size: int = 64,
    feature_contract_ref: str | None = None,
) -> ModelVersion:
    """Put the artifact into the store and describe it as a registered version would be."""
    ref = store.put_file(demo.artifact)
    return ModelVersion(
        model_id=model_id,
        version=version,
        weights_uri=ref.uri,
        weights_hash=ref.sha256,
        framework=demo.framework,
        runtime_requirements=RuntimeRequirements(max_batch_size=max_batch_size),
        feature_contract_ref=feature_contract_ref,
        training_run_id=f"demo-{demo.framework.value}",
        training_data_version=DatasetRef(name="ctr_train", version=1),
        eval_set_version=DatasetRef(name="ctr_eval", version=1),
        rollback_class=RollbackClass.STATELESS,
        tier=Tier.L1,
        signature=demo.signature,
        created_at=datetime.now(UTC),
    )
