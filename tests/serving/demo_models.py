"""Real, small demo models, one per Triton framework, trained on data generated here.

Plain functions so any test (or the benchmark) can build them: each builder trains a real model
on seeded numpy data, exports it in the format a Triton backend loads, and returns the artifact
file, an in-process predict function and the I/O signature the repository writer renders.

Import it as `demo_models` from tests under tests/serving (pytest puts that folder on sys.path),
or put tests/serving on sys.path first, as the benchmark does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from assets.trainers import (
    Trainer,
    pack_dir_deterministic,
    train_gbdt_onnx,
    train_keras_savedmodel,
    train_torch_mlp,
)
from demo.data import ctr_score
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


def make_ctr_data(
    n: int = 4000, n_features: int = N_FEATURES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A click-through-like task: clicks follow a nonlinear score of the features, plus noise.

    The interaction and threshold terms give trees and MLPs something to learn beyond a line.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features)).astype(np.float32)
    score = ctr_score(x)
    p = 1.0 / (1.0 + np.exp(-score))
    y = (rng.random(n) < p).astype(np.int64)
    return x, y


def _sample(seed: int, batch: int = 16, n_features: int = N_FEATURES) -> np.ndarray:
    return np.random.default_rng(seed + 1000).normal(size=(batch, n_features)).astype(np.float32)


def _build(trainer: Trainer, workdir: Path, seed: int) -> DemoModel:
    """Train with the fleet's own trainer (assets.trainers) on the seeded demo data."""
    t0 = time.perf_counter()
    x, y = make_ctr_data(seed=seed)
    trained = trainer(x, y, workdir, seed=seed)
    return DemoModel(
        framework=trained.framework,
        artifact=trained.artifact,
        predict=trained.predict,
        signature=trained.signature,
        sample=_sample(seed),
        build_seconds=time.perf_counter() - t0,
        extra=dict(trained.extra),
    )


def build_onnx_ctr(workdir: Path, *, seed: int = 0) -> DemoModel:
    """A GradientBoostingClassifier exported with skl2onnx, served as P(click) [batch, 1]."""
    return _build(train_gbdt_onnx, workdir, seed)


def build_torch_mlp(workdir: Path, *, seed: int = 0) -> DemoModel:
    """A two-layer MLP trained with Adam, saved as TorchScript (torch.jit.script)."""
    return _build(train_torch_mlp, workdir, seed)


def build_tf_savedmodel(workdir: Path, *, seed: int = 0) -> DemoModel:
    """A Keras MLP exported as a SavedModel whose serving_default signature speaks our names."""
    return _build(train_keras_savedmodel, workdir, seed)


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
