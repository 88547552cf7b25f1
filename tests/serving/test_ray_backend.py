"""Ray Serve escape hatch: real local Ray, real models, real HTTP.

Ray and Serve start once per session (`ray_session`); every Ray test is in xdist group "ray".
The KServe v2 handling is also checked in process, without Ray, where it is cheap.
"""

from __future__ import annotations

import json
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelops.artifacts import LocalArtifactStore
from modelops.errors import IntegrityError, SpecError
from modelops.spec import DatasetRef, Framework, ModelVersion, RollbackClass, Tier
from serving.ray_backend import (
    PYTHON_LOADER_KEY,
    RayServeBackend,
    V2Error,
    app_name,
    load_v2_model,
)
from serving.routing import BackendKind

N_FEATURES = 4


def _data(seed: int = 0, n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = ((x[:, 0] * x[:, 1] + x[:, 2]) > 0).astype(np.int64)
    return x, y


def _version(
    store: LocalArtifactStore,
    artifact: Path,
    framework: Framework,
    model_id: str,
    signature: dict[str, Any] | None = None,
) -> ModelVersion:
    ref = store.put_file(artifact)
    return ModelVersion(
        model_id=model_id,
        version=1,
        weights_uri=ref.uri,
        weights_hash=ref.sha256,
        framework=framework,
        training_run_id="t",
        training_data_version=DatasetRef(name="d", version=1),
        eval_set_version=DatasetRef(name="e", version=1),
        rollback_class=RollbackClass.STATELESS,
        tier=Tier.L1,
        signature=signature or {},
        created_at=datetime.now(UTC),
    )


def _build_onnx(tmp: Path) -> tuple[Path, Any]:
    """A seeded GBDT exported by skl2onnx: outputs `label` (INT64) and `probabilities`."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _data()
    clf = GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0).fit(x, y)
    proto = convert_sklearn(
        clf,
        initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    path = tmp / "gbdt.onnx"
    path.write_bytes(proto.SerializeToString())
    return path, clf


def _build_torchscript(tmp: Path) -> tuple[Path, Any]:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
    ).eval()
    path = tmp / "mlp.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, N_FEATURES)), str(path))
    return path, net


def _v2(x: np.ndarray, name: str = "features") -> dict[str, Any]:
    return {
        "id": "req-1",
        "inputs": [
            {"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ],
    }


def _outputs(body: dict[str, Any]) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in body["outputs"]}


def test_v2_model_in_process_answers_like_sklearn_and_rejects_bad_input(tmp_path: Path) -> None:
    """The v2 layer alone: same outputs as sklearn, and each client mistake is a 400."""
    store = LocalArtifactStore(tmp_path / "store")
    path, clf = _build_onnx(tmp_path)
    version = _version(store, path, Framework.onnx, "gbdt")
    model = load_v2_model(version, store.path_for(version.weights_hash))

    x = _data(seed=7, n=5)[0]
    out = model.infer(_v2(x))
    assert out["model_name"] == "gbdt__v1" and out["id"] == "req-1"
    got = _outputs(out)
    np.testing.assert_allclose(got["probabilities"], clf.predict_proba(x), atol=1e-5)
    np.testing.assert_array_equal(got["label"], clf.predict(x))
    assert {o["name"]: o["datatype"] for o in out["outputs"]} == {
        "label": "INT64",
        "probabilities": "FP32",
    }
    only = model.infer({**_v2(x), "outputs": [{"name": "label"}]})
    assert [o["name"] for o in only["outputs"]] == ["label"]

    bad = {
        "wrong datatype": {
            "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [0] * 4}]
        },
        "too few values": {
            "inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32", "data": [0] * 4}]
        },
        "unknown input": _v2(x, name="nope"),
        "wrong width": _v2(np.zeros((2, 3), np.float32)),
        "no inputs": {"inputs": []},
        "not an object": [1, 2, 3],
        "unknown output": {**_v2(x), "outputs": [{"name": "nope"}]},
    }
    for case, body in bad.items():
        with pytest.raises(V2Error) as err:
            model.infer(body)
        assert err.value.status == 400, case

    # Triton's binary tensor extension, serialized and parsed by tritonclient itself.
    import tritonclient.http as triton_http

    inp = triton_http.InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    body, json_size = triton_http.InferenceServerClient.generate_request_body([inp])
    payload, header_length = model.handle(body, json_size)
    assert header_length is not None  # no outputs named: tritonclient asks for binary ones
    result = triton_http.InferResult.from_response_body(payload, header_length=header_length)
    np.testing.assert_allclose(result.as_numpy("probabilities"), clf.predict_proba(x), atol=1e-5)
    with pytest.raises(V2Error):
        model.handle(body[:-4], json_size)  # a binary input cut short

    meta = model.metadata()
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, N_FEATURES]}]
    assert meta["parameters"]["weights_sha256"] == version.weights_hash


def test_load_refuses_weights_that_do_not_match_their_hash(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    path, _ = _build_onnx(tmp_path)
    version = _version(store, path, Framework.onnx, "gbdt")
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IntegrityError):
        load_v2_model(version, tampered)
    tf_version = version.model_copy(update={"framework": Framework.tensorflow})
    with pytest.raises(SpecError, match="cannot load framework 'tensorflow'"):
        load_v2_model(tf_version, path)


LOADER = '''
"""A hand-written model: a linear score read from a JSON artifact."""
import json

import numpy as np


def load(path):
    coef = np.asarray(json.loads(open(path).read())["coef"], dtype=np.float32)

    def predict(inputs):
        return {"score": inputs["features"] @ coef}

    return predict
'''


@pytest.mark.xdist_group("ray")
@pytest.mark.timeout(240)
def test_ray_serves_onnx_torchscript_and_python_over_http(
    ray_session: None, tmp_path: Path
) -> None:
    """Three versions as three Serve applications, queried over real HTTP with v2 JSON."""
    import torch

    store = LocalArtifactStore(tmp_path / "store")
    onnx_path, clf = _build_onnx(tmp_path)
    ts_path, net = _build_torchscript(tmp_path)
    coef = [0.5, -1.0, 2.0, 0.25]
    json_path = tmp_path / "linear.json"
    json_path.write_text(json.dumps({"coef": coef}))
    code_dir = tmp_path / "code"
    (code_dir / "handmade_linear").mkdir(parents=True)
    (code_dir / "handmade_linear" / "__init__.py").write_text(textwrap.dedent(LOADER))
    io_sig = {"dims": [N_FEATURES], "datatype": "FP32"}
    versions = {
        "onnx": _version(store, onnx_path, Framework.onnx, "ray-gbdt"),
        "torch": _version(
            store,
            ts_path,
            Framework.pytorch,
            "ray-mlp",
            {
                "inputs": [{"name": "features", **io_sig}],
                "outputs": [{"name": "logits", "dims": [2], "datatype": "FP32"}],
            },
        ),
        "python": _version(
            store,
            json_path,
            Framework.onnx,
            "ray-linear",
            {
                PYTHON_LOADER_KEY: "handmade_linear:load",
                "inputs": [{"name": "features", **io_sig}],
                "outputs": [{"name": "score", "dims": [], "datatype": "FP32"}],
            },
        ),
    }
    backend = RayServeBackend(store=store, runtime_env={"env_vars": {"PYTHONPATH": str(code_dir)}})

    t0 = time.perf_counter()
    endpoints = {k: backend.deploy(v, wait=False) for k, v in versions.items()}
    for ep in endpoints.values():
        backend.wait_ready(ep.backend_model, timeout=120)
    deploy_s = time.perf_counter() - t0
    names = {app_name(v.model_id, v.version) for v in versions.values()}
    assert names <= backend.deployed()
    assert all(backend.is_ready(n) for n in names)

    ep = endpoints["onnx"]
    assert ep.backend is BackendKind.ray and ep.backend_model == "ray-gbdt__v1"
    assert ep.url == f"{backend.base_url}/ray-gbdt__v1" and ep.version == 1

    x = _data(seed=3, n=6)[0]
    with httpx.Client(timeout=30) as http:

        def infer(key: str) -> httpx.Response:
            e = endpoints[key]
            return http.post(f"{e.url}/v2/models/{e.backend_model}/infer", json=_v2(x))

        r = infer("onnx")
        assert r.status_code == 200, r.text
        got = _outputs(r.json())
        np.testing.assert_allclose(got["probabilities"], clf.predict_proba(x), atol=1e-5)
        np.testing.assert_array_equal(got["label"], clf.predict(x))

        r = infer("torch")
        assert r.status_code == 200, r.text
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_outputs(r.json())["logits"], expected, atol=1e-5)

        r = infer("python")
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(
            _outputs(r.json())["score"], x @ np.asarray(coef, np.float32), rtol=1e-6
        )

        # An unmodified tritonclient, as against Triton, only with the route prefix in its URL.
        import tritonclient.http as triton_http

        triton = triton_http.InferenceServerClient(url=ep.url.removeprefix("http://"))
        assert triton.is_model_ready(ep.backend_model)
        inp = triton_http.InferInput("features", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        res = triton.infer(ep.backend_model, [inp])
        np.testing.assert_allclose(res.as_numpy("probabilities"), clf.predict_proba(x), atol=1e-5)
        np.testing.assert_array_equal(res.as_numpy("label"), clf.predict(x))
        triton.close()

        e = endpoints["torch"]
        meta = http.get(f"{e.url}/v2/models/{e.backend_model}").json()
        assert meta["platform"] == "pytorch_libtorch"
        assert meta["parameters"]["weights_sha256"] == versions["torch"].weights_hash
        assert http.get(f"{e.url}/v2/models/other__v9").status_code == 404
        bad = http.post(f"{e.url}/v2/models/{e.backend_model}/infer", content=b"{not json")
        assert bad.status_code == 400
        wrong_type = _v2(x)
        wrong_type["inputs"][0]["datatype"] = "INT64"
        wrong_type["inputs"][0]["data"] = [1] * x.size
        assert (
            http.post(f"{e.url}/v2/models/{e.backend_model}/infer", json=wrong_type).status_code
            == 400
        )

        # Deploying what already serves the same weights changes nothing. A real redeploy
        # would leave the application DEPLOYING (not ready) the moment deploy() returns.
        assert backend.deploy(versions["onnx"], wait=False) == ep
        assert backend.is_ready(ep.backend_model)

        backend.undeploy(ep.backend_model)
        assert ep.backend_model not in backend.deployed()
        assert not backend.is_ready(ep.backend_model)
        assert (
            http.post(f"{ep.url}/v2/models/{ep.backend_model}/infer", json=_v2(x)).status_code
            == 404
        )
        backend.undeploy(ep.backend_model)  # idempotent

    for key in ("torch", "python"):
        backend.undeploy(endpoints[key].backend_model, wait=False)
    deadline = time.monotonic() + 60
    while names & backend.deployed() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not names & backend.deployed()
    print(f"three Ray Serve applications ready in {deploy_s:.1f} s")


@pytest.mark.xdist_group("ray")
@pytest.mark.timeout(120)
def test_ray_refuses_to_deploy_tampered_weights(ray_session: None, tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    onnx_path, _ = _build_onnx(tmp_path)
    version = _version(store, onnx_path, Framework.onnx, "ray-tampered")
    tampered = tmp_path / "tampered.onnx"
    tampered.write_bytes(onnx_path.read_bytes()[:-1] + b"\x00")
    backend = RayServeBackend()
    with pytest.raises(IntegrityError):
        backend.deploy(version, tampered)
    assert "ray-tampered__v1" not in backend.deployed()
