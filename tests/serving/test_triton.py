"""The Triton backend against a real tritonserver (2.51, CPU, explicit model control).

Three real models (a scikit-learn GBDT as ONNX, a TorchScript MLP, a Keras SavedModel) are
trained here, put into a local artifact store, written as portable repository entries (the
Python backend running onnxruntime, torch and tensorflow) and served by the `triton` fixture's
server. This Triton has no native backends, so native entries are checked by parsing their
config with Triton's own protobuf schema and by loading their files with each framework.
"""

from __future__ import annotations

import shutil
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from demo_models import (
    BUILDERS,
    N_FEATURES,
    DemoModel,
    demo_version,
    pack_dir_deterministic,
)

from modelops.artifacts import LocalArtifactStore, sha256_file
from modelops.contracts import DType, Feature, FeatureContract
from modelops.desired import ABTest, Arm, CanaryTarget, DesiredState, ShadowTarget
from modelops.errors import IntegrityError, NotFoundError, SpecError
from modelops.spec import (
    Framework,
    ModelVersion,
    RuntimeRequirements,
    ShadowMode,
    State,
    StateChange,
)
from serving.triton.backend import (
    ModelLoadError,
    ModelStatistics,
    RetentionPolicy,
    TensorMeta,
    TritonBackend,
    promoted_at,
)
from serving.triton.repo import (
    PYTHON_MODEL_SOURCE,
    RepositoryWriter,
    parse_triton_model_name,
    resolve_signature,
    triton_model_name,
)
from serving.triton.server import TritonServer

# Served models are loaded once per module; keep this module's tests on one worker so the
# loads (seconds each in the Python backend) happen once, not once per xdist worker.
pytestmark = pytest.mark.xdist_group("triton_models")

FRAMEWORKS = [Framework.onnx, Framework.pytorch, Framework.tensorflow]

# Served vs in-process tolerances. ONNX: the in-process reference is the scikit-learn model,
# which sums its trees in float64 while onnxruntime's TreeEnsemble sums in float32 (observed
# ~2e-7). Torch: the same TorchScript graph, but the served batch can differ in size and thread
# count, which changes the matmul blocking order (float32 rounding, ~1e-7). TF: oneDNN picks its
# kernels by batch shape and thread count, and the server runs one intra-op thread while this
# process uses all cores, so the reduction order differs more; 1e-4 on a probability is still
# far below any decision threshold the gateway or an eval would notice.
ATOL = {Framework.onnx: 1e-5, Framework.pytorch: 1e-5, Framework.tensorflow: 1e-4}
BATCH_DELAY_US = 50_000  # wide enough that a burst meets in one batch even on a loaded machine


@pytest.fixture(scope="session")
def demos(tmp_path_factory: pytest.TempPathFactory) -> dict[Framework, DemoModel]:
    root = tmp_path_factory.mktemp("demo_models")
    return {fw: build(root / fw.value) for fw, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def writer(triton: TritonServer, store: LocalArtifactStore) -> RepositoryWriter:
    return RepositoryWriter(triton.repository, store, batch_delay_us=BATCH_DELAY_US)


@pytest.fixture(scope="module")
def backend(triton: TritonServer) -> Iterator[TritonBackend]:
    with TritonBackend(triton.http_url) as b:
        yield b


@dataclass
class Served:
    name: str
    demo: DemoModel
    version: ModelVersion
    path: Path
    load_s: float


@pytest.fixture(scope="module")
def served(
    triton: TritonServer,
    demos: dict[Framework, DemoModel],
    store: LocalArtifactStore,
    writer: RepositoryWriter,
) -> Iterator[dict[Framework, Served]]:
    """One portable entry per framework, loaded concurrently (Triton loads in parallel)."""
    entries = {}
    for fw in FRAMEWORKS:
        version = demo_version(demos[fw], store, model_id=f"ctr-{fw.value}", version=1)
        entries[fw] = (version, writer.write(version))

    def load(fw: Framework) -> float:
        with TritonBackend(triton.url) as b:  # tritonclient.http is per thread
            return b.load(entries[fw][1].name)

    with ThreadPoolExecutor(len(FRAMEWORKS)) as pool:
        times = dict(zip(FRAMEWORKS, pool.map(load, FRAMEWORKS), strict=True))
    yield {
        fw: Served(path.name, demos[fw], version, path, times[fw])
        for fw, (version, path) in entries.items()
    }
    with TritonBackend(triton.url) as b:
        for _, path in entries.values():
            b.unload(path.name)
            writer.remove(path.name)


# --- reading Triton's statistics --------------------------------------------------------------
#
# Triton's Python backend sends a batch's responses first and reports its statistics after
# them: per request (success), then for the batch (executions, rows). A client can therefore
# hold every answer while Triton does not count the last batch yet. With one instance (what
# the writer configures), the next batch runs only after the previous one is reported, and a
# batch's rows are the last thing reported for it.

PROBE_ROWS = 59  # a batch size no other request in this module sends


def _executions_of_size(b: TritonBackend, name: str, size: int) -> int:
    raw = b.client.get_inference_statistics(name)
    return sum(
        int(bs["compute_infer"]["count"])
        for row in raw.get("model_stats", [])
        for bs in row.get("batch_stats", [])
        if int(bs["batch_size"]) == size
    )


def _wait_for(cond: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while not cond():
        assert time.monotonic() < end, f"Triton's statistics never showed {what}"
        time.sleep(0.01)


def _settled_statistics(b: TritonBackend, s: Served) -> ModelStatistics:
    """Statistics that count every request answered before this call.

    One probe of PROBE_ROWS rows runs after every earlier batch was reported; once a batch of
    that size is counted, the probe is fully reported too, and so is everything before it.
    """
    config = b.config(s.name)
    assert [int(g["count"]) for g in config["instance_group"]] == [1]
    seen = _executions_of_size(b, s.name, PROBE_ROWS)
    probe = np.random.default_rng(59).normal(size=(PROBE_ROWS, N_FEATURES)).astype(np.float32)
    b.infer(s.name, {"features": probe})
    _wait_for(lambda: _executions_of_size(b, s.name, PROBE_ROWS) > seen, "the probe batch")
    return b.statistics(s.name)


def _statistics_after(
    b: TritonBackend, name: str, before: ModelStatistics, requests: int, rows: int
) -> ModelStatistics:
    """The statistics once the `requests` (`rows` in all) answered since `before` are all
    reported; the caller then checks the counts exactly, so an extra request still fails."""

    def reported() -> bool:
        now = b.statistics(name)
        return (
            now.success_count - before.success_count >= requests
            and now.inference_count - before.inference_count >= rows
        )

    _wait_for(reported, f"{requests} requests of {rows} rows since the last reading")
    return b.statistics(name)


# --- serving the three frameworks -----------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fw", FRAMEWORKS, ids=lambda f: f.value)
def test_served_outputs_match_in_process(
    fw: Framework, served: dict[Framework, Served], backend: TritonBackend
) -> None:
    s = served[fw]
    assert s.load_s > 0
    expected = s.demo.predict(s.demo.sample)
    assert expected.std() > 0.05, "a constant model would make the comparison meaningless"
    out = backend.infer(s.name, {"features": s.demo.sample})
    assert set(out) == {"probability"}
    got = out["probability"]
    assert got.dtype == np.float32 and got.shape == (len(s.demo.sample), 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL[fw])
    one = backend.infer(s.name, {"features": s.demo.sample[3:4]})["probability"]
    np.testing.assert_allclose(one, expected[3:4], rtol=0, atol=ATOL[fw])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fw", FRAMEWORKS, ids=lambda f: f.value)
def test_dynamic_batching_returns_each_request_its_own_rows(
    fw: Framework, served: dict[Framework, Served], triton: TritonServer
) -> None:
    """Concurrent requests of different sizes are merged into batches and split back exactly.

    Batching is opportunistic: on a loaded 2-core machine one burst can reach the server
    spread over more than the queue delay. Every burst must come back exact, and at least one
    of three must have been batched.
    """
    import tritonclient.http as httpclient

    s = served[fw]
    rng = np.random.default_rng(7)
    batches = [rng.normal(size=(n, N_FEATURES)).astype(np.float32) for n in range(1, 9)]
    rows = sum(len(x) for x in batches)
    executions = []
    with TritonBackend(triton.url) as b:
        before = _settled_statistics(b, s)
    for _ in range(3):
        with httpclient.InferenceServerClient(triton.url, concurrency=len(batches)) as client:
            pending = []
            for x in batches:
                tensor = httpclient.InferInput("features", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                pending.append(client.async_infer(s.name, [tensor]))
            results = [p.get_result().as_numpy("probability") for p in pending]
        for x, got in zip(batches, results, strict=True):
            np.testing.assert_allclose(got, s.demo.predict(x), rtol=0, atol=ATOL[fw])
        with TritonBackend(triton.url) as b:
            after = _statistics_after(b, s.name, before, len(batches), rows)
        assert after.success_count - before.success_count == len(batches)
        assert after.inference_count - before.inference_count == rows
        executions.append(after.execution_count - before.execution_count)
        before = after
        if executions[-1] < len(batches):
            break
    assert min(executions) < len(batches), f"nothing was batched in 3 bursts: {executions}"


@pytest.mark.timeout(120)
def test_metadata_and_config_show_the_signature(
    served: dict[Framework, Served], backend: TritonBackend
) -> None:
    for fw, s in served.items():
        meta = backend.metadata(s.name)
        assert meta.name == s.name and meta.versions == ["1"]
        assert meta.inputs == [TensorMeta(name="features", datatype="FP32", shape=[-1, 8])]
        assert meta.outputs == [TensorMeta(name="probability", datatype="FP32", shape=[-1, 1])]
        config = backend.config(s.name)
        assert config["backend"] == "python"
        assert config["max_batch_size"] == 64
        assert int(config["dynamic_batching"]["max_queue_delay_microseconds"]) == BATCH_DELAY_US
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        assert params["modelops.framework"] == fw.value
        assert params["modelops.weights_sha256"] == s.version.weights_hash


@pytest.mark.timeout(120)
def test_portable_entry_holds_the_verified_artifact_and_the_model_file(
    served: dict[Framework, Served],
) -> None:
    for fw, s in served.items():
        # The Python backend compiles model.py next to itself: __pycache__ is Triton's own.
        files = sorted(p.name for p in (s.path / "1").iterdir() if p.name != "__pycache__")
        artifact = {
            Framework.onnx: "model.onnx",
            Framework.pytorch: "model.pt",
            Framework.tensorflow: "model.savedmodel.tar",
        }[fw]
        assert files == sorted([artifact, "model.py"])
        assert (s.path / "1" / artifact).read_bytes() == s.demo.data
        assert (s.path / "1" / "model.py").read_bytes() == PYTHON_MODEL_SOURCE.read_bytes()


@pytest.mark.timeout(120)
def test_statistics_count_inferences(
    served: dict[Framework, Served], backend: TritonBackend
) -> None:
    s = served[Framework.onnx]
    before = _settled_statistics(backend, s)
    for _ in range(3):
        backend.infer(s.name, {"features": s.demo.sample[:5]})
    after = _statistics_after(backend, s.name, before, 3, 15)
    assert after.success_count - before.success_count == 3
    assert after.inference_count - before.inference_count == 15
    assert after.fail_count == before.fail_count
    assert after.compute_infer_ns > before.compute_infer_ns
    assert after.last_inference_ms >= before.last_inference_ms


# --- lifecycle and errors on the real server ------------------------------------------------


@pytest.mark.timeout(120)
def test_load_unload_ready_transitions(
    demos: dict[Framework, DemoModel],
    store: LocalArtifactStore,
    writer: RepositoryWriter,
    backend: TritonBackend,
) -> None:
    demo = demos[Framework.onnx]
    version = demo_version(demo, store, model_id="ctr-cycle", version=3)
    name = writer.write(version).name
    assert name == "ctr-cycle__v3" and name in writer.entries()
    assert name not in backend.loaded() and not backend.is_ready(name)

    elapsed = backend.load(name)
    assert 0 < elapsed < 60
    assert backend.is_ready(name) and name in backend.loaded()
    got = backend.infer(name, {"features": demo.sample})["probability"]
    np.testing.assert_allclose(got, demo.predict(demo.sample), rtol=0, atol=ATOL[Framework.onnx])

    backend.unload(name)
    assert not backend.is_ready(name) and name not in backend.loaded()
    with pytest.raises(NotFoundError, match="not loaded"):
        backend.infer(name, {"features": demo.sample})

    assert backend.ensure_loaded(name) > 0  # the entry stayed on disk: no rewrite needed
    assert backend.is_ready(name)
    assert backend.ensure_loaded(name) == 0.0  # already serving: Triton is not asked to reload
    backend.unload(name)
    backend.unload(name)  # idempotent
    assert writer.remove(name) and name not in writer.entries()
    assert name not in {e["name"] for e in backend.repository_index()}
    with pytest.raises(NotFoundError, match="not in the model repository"):
        backend.load(name)
    assert not writer.remove(name)


@pytest.mark.timeout(60)
def test_tampered_artifact_never_reaches_the_repository(
    demos: dict[Framework, DemoModel],
    triton: TritonServer,
    backend: TritonBackend,
    tmp_path: Path,
) -> None:
    # A store of its own: the module's store serves the same blob to other tests.
    store = LocalArtifactStore(tmp_path / "artifacts")
    writer = RepositoryWriter(triton.repository, store)
    version = demo_version(demos[Framework.onnx], store, model_id="ctr-tampered")
    blob = store.path_for(version.weights_hash)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still parses, wrong weights
    blob.write_bytes(bytes(data))

    with pytest.raises(IntegrityError, match=version.weights_hash):
        writer.write(version)
    name = triton_model_name("ctr-tampered", 1)
    assert not (writer.root / name).exists()
    assert name not in writer.entries()
    staging = writer.root.parent / f".{writer.root.name}.staging"
    assert not staging.exists() or not any(staging.iterdir())
    with pytest.raises(NotFoundError):
        backend.load(name)


def _swap_weights(entry: Path, other: Path) -> None:
    (entry / "1" / "model.onnx").write_bytes((other / "1" / "model.onnx").read_bytes())


def _extra_version_dir(entry: Path, other: Path) -> None:
    # Triton's default version policy serves the highest version directory it finds.
    shutil.copytree(other / "1", entry / "2")


def _planted_model_py(entry: Path, other: Path) -> None:
    (entry / "1" / "model.py").write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('planted model.py')\n"
    )


TAMPERINGS = {
    "weights swapped for another version's": _swap_weights,
    "extra version directory": _extra_version_dir,
    "model.py replaced": _planted_model_py,
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("tamper", sorted(TAMPERINGS))
def test_a_tampered_repository_copy_is_rewritten_before_it_loads(
    triton: TritonServer,
    demos: dict[Framework, DemoModel],
    backend: TritonBackend,
    tmp_path: Path,
    tamper: str,
) -> None:
    """The manifest alone is not trusted: before a load, write() rehashes the entry's files
    against the registered weights_hash (and the shipped model.py) and rewrites the entry
    from the verified store when they differ, so a reload serves the right version."""
    from demo_models import build_onnx_ctr

    store = LocalArtifactStore(tmp_path / "artifacts")
    writer = RepositoryWriter(triton.repository, store)
    right, other = demos[Framework.onnx], build_onnx_ctr(tmp_path / "other", seed=7)
    model_id = f"ctr-swap-{sorted(TAMPERINGS).index(tamper)}"
    v1 = demo_version(right, store, model_id=model_id, version=1)
    v2 = demo_version(other, store, model_id=model_id, version=2)
    entry, other_entry = writer.write(v1), writer.write(v2)
    sample = right.sample[:8]
    assert np.abs(right.predict(sample) - other.predict(sample)).max() > 1e-3
    manifest = (entry / "modelops.json").read_bytes()
    TAMPERINGS[tamper](entry, other_entry)
    assert (entry / "modelops.json").read_bytes() == manifest  # the manifest still matches
    try:
        assert writer.write(v1) == entry
        backend.load(entry.name)
        got = backend.infer(entry.name, {"features": sample})["probability"]
        np.testing.assert_allclose(got, right.predict(sample), atol=ATOL[Framework.onnx])
        assert sha256_file(entry / "1" / "model.onnx") == v1.weights_hash
        assert sorted(p.name for p in entry.iterdir() if p.is_dir()) == ["1"]
        assert (entry / "1" / "model.py").read_bytes() == PYTHON_MODEL_SOURCE.read_bytes()
    finally:
        if backend.is_ready(entry.name):
            backend.unload(entry.name)
        writer.remove(entry.name)
        writer.remove(other_entry.name)


def test_an_intact_entry_is_kept_and_its_bytecode_cache_dropped(
    demos: dict[Framework, DemoModel], tmp_path: Path
) -> None:
    """Rehashing keeps the no-op rewrite of an intact entry; the Python stub's bytecode cache
    is derived, not verifiable, so it is dropped rather than trusted."""
    store = LocalArtifactStore(tmp_path / "artifacts")
    version = demo_version(demos[Framework.onnx], store)
    writer = RepositoryWriter(tmp_path / "repo", store)
    entry = writer.write(version)
    inode = (entry / "1" / "model.onnx").stat().st_ino
    cache = entry / "1" / "__pycache__"
    cache.mkdir()
    (cache / "model.cpython-311.pyc").write_bytes(b"not trusted")
    assert writer.write(version) == entry
    assert (entry / "1" / "model.onnx").stat().st_ino == inode  # not rewritten
    assert not cache.exists()
    (entry / "1" / "stray.py").write_text("")  # not what write() puts there: rewritten
    writer.write(version)
    assert sorted(p.name for p in (entry / "1").iterdir()) == ["model.onnx", "model.py"]


@pytest.mark.timeout(60)
def test_unknown_model_gives_typed_one_line_errors(
    backend: TritonBackend, demos: dict[Framework, DemoModel]
) -> None:
    name = "no-such-model__v1"
    x = demos[Framework.onnx].sample
    calls = [
        lambda: backend.load(name),
        lambda: backend.infer(name, {"features": x}),
        lambda: backend.metadata(name),
        lambda: backend.statistics(name),
    ]
    for call in calls:
        with pytest.raises(NotFoundError) as info:
            call()
        assert name in str(info.value) and "\n" not in str(info.value)
    assert not backend.is_ready(name)


@pytest.mark.timeout(60)
def test_bad_request_to_a_served_model_is_a_spec_error(
    served: dict[Framework, Served], backend: TritonBackend
) -> None:
    s = served[Framework.onnx]
    with pytest.raises(SpecError, match="FP64"):
        backend.infer(s.name, {"features": s.demo.sample.astype(np.float64)})
    with pytest.raises(SpecError, match="unexpected inference input"):
        backend.infer(s.name, {"x": s.demo.sample})


@pytest.mark.timeout(120)
def test_load_failures_carry_tritons_reason(
    demos: dict[Framework, DemoModel],
    store: LocalArtifactStore,
    writer: RepositoryWriter,
    triton: TritonServer,
) -> None:
    """A corrupt-but-hashed artifact and a signature the model does not have both fail at load.

    The second is caught by the load-time warm-up run, not by live traffic.
    """
    garbage = store.put_bytes(b"these bytes hash fine but are not an ONNX model")
    base = demo_version(demos[Framework.onnx], store, model_id="ctr-broken")
    broken = base.model_copy(update={"weights_hash": garbage.sha256, "weights_uri": garbage.uri})
    wrong_sig = dict(base.signature, outputs=[{"name": "score", "datatype": "FP32", "dims": [1]}])
    mismatched = base.model_copy(update={"version": 2, "signature": wrong_sig})
    names = [writer.write(v).name for v in (broken, mismatched)]
    errors: dict[str, ModelLoadError] = {}
    lock = threading.Lock()

    def load(name: str) -> None:
        with TritonBackend(triton.url) as b:
            try:
                b.load(name)
            except ModelLoadError as exc:
                with lock:
                    errors[name] = exc

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(load, names))
    assert set(errors) == set(names)
    for exc in errors.values():
        assert "\n" not in str(exc) and "At:" not in str(exc) and len(str(exc)) < 600
    assert "INVALID_PROTOBUF" in str(errors[names[0]])
    assert "score" in str(errors[names[1]])
    with TritonBackend(triton.url) as b:
        assert not set(names) & b.loaded()
    for name in names:
        writer.remove(name)


# --- native rendering (files and config only: this Triton has no native backends) -----------


def _parse_config(path: Path):  # type: ignore[no-untyped-def]
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fw", FRAMEWORKS, ids=lambda f: f.value)
def test_native_rendering(fw: Framework, demos: dict[Framework, DemoModel], tmp_path: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as pb

    store = LocalArtifactStore(tmp_path / "artifacts")
    version = demo_version(demos[fw], store, model_id="ctr", version=7, max_batch_size=32)
    if fw is Framework.pytorch:  # a GPU requirement renders a GPU instance group
        rr = RuntimeRequirements(max_batch_size=32, gpu_class="a10")
        version = version.model_copy(update={"runtime_requirements": rr})
    entry = RepositoryWriter(tmp_path / "repo", store).write(version, rendering="native")
    assert entry == tmp_path / "repo" / "ctr__v7"

    cfg = _parse_config(entry / "config.pbtxt")
    platform = {
        Framework.onnx: "onnxruntime_onnx",
        Framework.pytorch: "pytorch_libtorch",
        Framework.tensorflow: "tensorflow_savedmodel",
    }[fw]
    assert cfg.name == "ctr__v7" and cfg.platform == platform and cfg.backend == ""
    assert cfg.max_batch_size == 32 and cfg.HasField("dynamic_batching")
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("features", pb.TYPE_FP32, [N_FEATURES])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [
        ("probability", pb.TYPE_FP32, [1])
    ]
    kind = (
        pb.ModelInstanceGroup.KIND_GPU
        if fw is Framework.pytorch
        else pb.ModelInstanceGroup.KIND_CPU
    )
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(1, kind)]
    assert "modelops.framework" not in cfg.parameters
    assert cfg.parameters["modelops.weights_sha256"].string_value == version.weights_hash
    assert not (entry / "1" / "model.py").exists()

    # The native backends bind tensors by the names inside the artifact: check they match.
    if fw is Framework.onnx:
        import onnx

        assert (entry / "1" / "model.onnx").read_bytes() == demos[fw].data
        graph = onnx.load(str(entry / "1" / "model.onnx")).graph
        assert [i.name for i in graph.input] == ["features"]
        assert [o.name for o in graph.output] == ["probability"]
    elif fw is Framework.pytorch:
        import torch

        assert (entry / "1" / "model.pt").read_bytes() == demos[fw].data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: see demo_models
            module = torch.jit.load(str(entry / "1" / "model.pt"))
        args = [a.name for a in module.forward.schema.arguments]
        assert args == ["self", "features"]
    else:
        import tensorflow as tf

        saved = entry / "1" / "model.savedmodel"
        assert (saved / "saved_model.pb").is_file() and (saved / "variables").is_dir()
        fn = tf.saved_model.load(str(saved)).signatures["serving_default"]
        assert set(fn.structured_input_signature[1]) == {"features"}
        assert set(fn.structured_outputs) == {"probability"}
        got = fn(features=tf.constant(demos[fw].sample))["probability"].numpy()
        np.testing.assert_allclose(got, demos[fw].predict(demos[fw].sample), atol=ATOL[fw])


def test_tampered_savedmodel_tar_is_refused_before_extraction(
    demos: dict[Framework, DemoModel], tmp_path: Path
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    version = demo_version(demos[Framework.tensorflow], store)
    blob = store.path_for(version.weights_hash)
    blob.write_bytes(blob.read_bytes()[:-1024])  # truncated
    writer = RepositoryWriter(tmp_path / "repo", store)
    with pytest.raises(IntegrityError):
        writer.write(version, rendering="native")
    assert writer.entries() == set() and not (tmp_path / "repo" / "ctr__v1").exists()


# --- the writer as pure logic ---------------------------------------------------------------


def _contract(n: int, dtype: DType = DType.FLOAT32) -> FeatureContract:
    return FeatureContract(
        name="ctr_features",
        version=2,
        features=[Feature(name=f"f{i}", dtype=dtype) for i in range(n)],
    )


def _version(tmp_path: Path, demos: dict[Framework, DemoModel], **update: object) -> ModelVersion:
    store = LocalArtifactStore(tmp_path / "artifacts")
    version = demo_version(demos[Framework.onnx], store, feature_contract_ref="ctr_features@2")
    return version.model_copy(update=update)


def test_writes_are_idempotent_unless_forced(
    demos: dict[Framework, DemoModel], tmp_path: Path
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    version = demo_version(demos[Framework.onnx], store)
    writer = RepositoryWriter(tmp_path / "repo", store)
    entry = writer.write(version)
    sentinel = entry / "sentinel"
    sentinel.write_text("x")
    assert writer.write(version) == entry and sentinel.exists()  # same manifest: untouched
    assert writer.manifest(entry.name).weights_hash == version.weights_hash  # type: ignore[union-attr]
    writer.write(version, force=True)
    assert not sentinel.exists()
    writer.write(version, rendering="native")  # a different rendering rewrites the entry
    assert writer.manifest(entry.name).rendering == "native"  # type: ignore[union-attr]
    assert not (entry / "1" / "model.py").exists()


def test_contract_binds_the_feature_input(
    demos: dict[Framework, DemoModel], tmp_path: Path
) -> None:
    sig = dict(demos[Framework.onnx].signature)
    sig["inputs"] = [{"name": "features", "datatype": "FP32", "dims": [-1]}]
    version = _version(tmp_path, demos, signature=sig)
    bound = resolve_signature(version, _contract(N_FEATURES))
    assert bound.inputs[0].dims == [N_FEATURES]
    assert resolve_signature(version).inputs[0].dims == [-1]

    store = LocalArtifactStore(tmp_path / "artifacts")
    entry = RepositoryWriter(tmp_path / "repo", store).write(
        version, contract=_contract(N_FEATURES)
    )
    cfg = _parse_config(entry / "config.pbtxt")
    assert list(cfg.input[0].dims) == [N_FEATURES]
    assert cfg.parameters["modelops.feature_contract"].string_value == "ctr_features@2"
    names = cfg.parameters["modelops.feature_names"].string_value.split(",")
    assert names == [f"f{i}" for i in range(N_FEATURES)]


@pytest.mark.parametrize(
    ("contract", "match"),
    [
        (_contract(N_FEATURES - 1), "has 8 feature columns but contract ctr_features@2 has 7"),
        (_contract(N_FEATURES, DType.INT64), "'f0' .* is int64, which input 'features' \\(FP32\\)"),
    ],
    ids=["width", "dtype"],
)
def test_contract_mismatch_is_refused(
    contract: FeatureContract, match: str, demos: dict[Framework, DemoModel], tmp_path: Path
) -> None:
    version = _version(tmp_path, demos)
    store = LocalArtifactStore(tmp_path / "artifacts")
    writer = RepositoryWriter(tmp_path / "repo", store)
    with pytest.raises(SpecError, match=match):
        writer.write(version, contract=contract)
    assert writer.entries() == set()


@pytest.mark.parametrize(
    ("update", "match"),
    [
        ({"signature": {}}, "has no signature"),
        (
            {
                "signature": {
                    "inputs": [{"name": "x", "datatype": "FP32", "dims": [0]}],
                    "outputs": [{"name": "y", "datatype": "FP32", "dims": [1]}],
                }
            },
            "invalid signature at inputs.0.dims",
        ),
        (
            {
                "signature": {
                    "inputs": [{"name": "x", "datatype": "FLOAT", "dims": [1]}],
                    "outputs": [{"name": "y", "datatype": "FP32", "dims": [1]}],
                }
            },
            "invalid signature at inputs.0.datatype",
        ),
        ({"framework": Framework.vllm_engine}, "'vllm_engine' is not served by Triton"),
    ],
    ids=["missing", "zero-dim", "bad-dtype", "llm"],
)
def test_unservable_versions_are_refused(
    update: dict[str, object], match: str, demos: dict[Framework, DemoModel], tmp_path: Path
) -> None:
    version = _version(tmp_path, demos, **update)
    store = LocalArtifactStore(tmp_path / "artifacts")
    with pytest.raises(SpecError, match=match) as info:
        RepositoryWriter(tmp_path / "repo", store).write(version)
    assert "\n" not in str(info.value)


def test_unbatched_version_spells_out_the_batch_dim(
    demos: dict[Framework, DemoModel], tmp_path: Path
) -> None:
    version = _version(tmp_path, demos, runtime_requirements=RuntimeRequirements(max_batch_size=0))
    store = LocalArtifactStore(tmp_path / "artifacts")
    cfg = _parse_config(RepositoryWriter(tmp_path / "repo", store).write(version) / "config.pbtxt")
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert list(cfg.input[0].dims) == [-1, N_FEATURES]


def test_model_names_round_trip() -> None:
    assert triton_model_name("ctr", 12) == "ctr__v12"
    assert parse_triton_model_name("ctr__v12") == ("ctr", 12)
    assert parse_triton_model_name("a__v2__v3") == ("a__v2", 3)
    for foreign in ("ctr", "ctr__v", "ctr__v0", "__v3", "ctr__vx"):
        assert parse_triton_model_name(foreign) is None


def test_savedmodel_tar_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "variables").mkdir(parents=True)
    (src / "saved_model.pb").write_bytes(b"graph")
    (src / "variables" / "variables.index").write_bytes(b"index")
    a = pack_dir_deterministic(src, tmp_path / "a.tar").read_bytes()
    (src / "saved_model.pb").touch()  # a newer mtime must not change the blob
    b = pack_dir_deterministic(src, tmp_path / "b.tar").read_bytes()
    assert a == b
    import tarfile

    with tarfile.open(tmp_path / "a.tar") as tar:
        assert tar.getnames() == ["saved_model.pb", "variables", "variables/variables.index"]
        assert {m.mtime for m in tar.getmembers()} == {0}


# --- retention policy (pure logic) ----------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _desired(**kw: object) -> DesiredState:
    return DesiredState(model_id="ctr", slice="global", generation=1, **kw)  # type: ignore[arg-type]


def test_retention_keeps_everything_the_desired_state_routes_to() -> None:
    policy = RetentionPolicy(window_s=3600, clock=Clock(T0))
    d = policy.decide(
        _desired(
            prod_version=2,
            canary=CanaryTarget(version=3, percent=5),
            shadow=ShadowTarget(version=4, percent=100, mode=ShadowMode.live),
        ),
        promoted_at=T0,
    )
    assert set(d.keep) == {2, 3, 4}
    assert "rollback target while v3" in d.keep[2]
    assert d.names() == {"ctr__v2", "ctr__v3", "ctr__v4"}

    ab = policy.decide(
        _desired(
            prod_version=2,
            ab_test=ABTest(
                layer="ctr.global", arms=[Arm(version=2, percent=50), Arm(version=5, percent=50)]
            ),
        ),
        promoted_at=T0,
    )
    assert set(ab.keep) == {2, 5} and "while v5" in ab.keep[2]


def test_previous_prod_stays_for_the_window_after_promotion() -> None:
    clock = Clock(T0 + timedelta(minutes=10))
    policy = RetentionPolicy(window_s=3600, clock=clock)
    desired = _desired(prod_version=3, rollback_target=2)
    inside = policy.decide(desired, promoted_at=T0)
    assert set(inside.keep) == {3, 2} and inside.release_at == T0 + timedelta(hours=1)
    loaded = {"ctr__v1", "ctr__v2", "ctr__v3", "other__v1", "not-ours"}
    assert RetentionPolicy.unloads(loaded, [inside]) == {"ctr__v1"}

    clock.now = T0 + timedelta(hours=1)  # the window is half-open: at its end, it is over
    after = policy.decide(desired, promoted_at=T0)
    assert set(after.keep) == {3} and after.release_at is None
    assert RetentionPolicy.unloads(loaded, [after]) == {"ctr__v1", "ctr__v2"}

    unknown = policy.decide(desired, promoted_at=None)
    assert 2 in unknown.keep and "unknown" in unknown.keep[2]


def test_retention_is_the_union_over_slices() -> None:
    policy = RetentionPolicy(window_s=0, clock=Clock(T0))
    us = policy.decide(_desired(prod_version=2), promoted_at=T0)
    eu = DesiredState(model_id="ctr", slice="eu", generation=4, prod_version=1)
    eu_d = policy.decide(eu, promoted_at=T0)
    assert RetentionPolicy.unloads({"ctr__v1", "ctr__v2", "ctr__v3"}, [us, eu_d]) == {"ctr__v3"}


def test_promoted_at_reads_the_state_history(
    demos: dict[Framework, DemoModel], tmp_path: Path
) -> None:
    history = [
        StateChange(slice="global", state=State.CANARY, ts=T0, actor="a"),
        StateChange(slice="global", state=State.PROMOTED, ts=T0 + timedelta(hours=2), actor="a"),
        StateChange(slice="eu", state=State.PROMOTED, ts=T0 + timedelta(hours=5), actor="a"),
    ]
    version = _version(tmp_path, demos, state_history=history)
    assert promoted_at(version, "global") == T0 + timedelta(hours=2)
    assert promoted_at(version, "eu") == T0 + timedelta(hours=5)
    assert promoted_at(version, "apac") is None
