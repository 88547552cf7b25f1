"""Turn a registered version into a Triton model-repository entry.

The entry is built in a staging directory beside the repository and renamed into place only
once it is complete, so Triton never sees half an entry, and weights that fail their sha256
(invariant 6) never reach the repository at all: the artifact store verifies every byte it
hands out.

Two renderings per framework:
- native: the framework's own Triton backend (onnxruntime, libtorch, tensorflow), as production
  GPU servers run it;
- portable: the Python backend runs the same artifact with onnxruntime, torch or tensorflow
  (`serving/triton/python_model.py`), for a Triton that lacks native backends, such as the
  one the embedded default ships.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelops.artifacts import ArtifactStore, sha256_file
from modelops.contracts import DType, FeatureContract, widens
from modelops.errors import SpecError
from modelops.spec import Framework, ModelVersion

__all__ = [
    "TritonDType",
    "TensorSpec",
    "Signature",
    "Rendering",
    "EntryManifest",
    "RepositoryWriter",
    "triton_model_name",
    "parse_triton_model_name",
    "resolve_signature",
    "render_config",
    "PYTHON_MODEL_SOURCE",
]

Rendering = Literal["portable", "native"]

TritonDType = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]

PYTHON_MODEL_SOURCE = Path(__file__).with_name("python_model.py")
"""Copied verbatim as `1/model.py` of every portable entry."""

MANIFEST = "modelops.json"
_NAME_SEP = "__v"
_TENSOR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")

# Which feature dtypes a tensor dtype can hold; contract dtypes must widen into it losslessly.
_AS_FEATURE_DTYPE: dict[str, DType] = {
    "BOOL": DType.BOOL,
    "INT8": DType.INT8,
    "INT16": DType.INT16,
    "INT32": DType.INT32,
    "INT64": DType.INT64,
    "FP16": DType.FLOAT16,
    "FP32": DType.FLOAT32,
    "FP64": DType.FLOAT64,
    "BYTES": DType.BYTES,
}

_ARTIFACT_NAMES: dict[tuple[Framework, str], str] = {
    (Framework.onnx, "native"): "model.onnx",
    (Framework.onnx, "portable"): "model.onnx",
    (Framework.pytorch, "native"): "model.pt",
    (Framework.pytorch, "portable"): "model.pt",
    # The native TF backend reads a SavedModel directory; the portable model extracts the
    # verified tar itself, so the entry holds exactly the bytes that were hashed.
    (Framework.tensorflow, "native"): "model.savedmodel",
    (Framework.tensorflow, "portable"): "model.savedmodel.tar",
}

_NATIVE_PLATFORM: dict[Framework, str] = {
    Framework.onnx: "onnxruntime_onnx",
    Framework.pytorch: "pytorch_libtorch",
    Framework.tensorflow: "tensorflow_savedmodel",
}


def triton_model_name(model_id: str, version: int) -> str:
    """One Triton model per registry version, so versions load, unload and route separately."""
    return f"{model_id}{_NAME_SEP}{version}"


def parse_triton_model_name(name: str) -> tuple[str, int] | None:
    """Invert `triton_model_name`; None for names this plane did not write."""
    model_id, sep, ver = name.rpartition(_NAME_SEP)
    if not sep or not model_id or not ver.isdigit() or int(ver) < 1:
        return None
    return model_id, int(ver)


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_M):
    """One input or output. `dims` is the shape of one example: the batch dim is implicit."""

    name: str
    datatype: TritonDType
    dims: list[int] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _TENSOR_NAME.match(v):
            raise ValueError(
                f"tensor name {v!r} is not allowed; use a letter or '_' then letters, digits, "
                "'_', '.', ':' or '-'"
            )
        return v

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if any(d == 0 or d < -1 for d in v):
            raise ValueError(f"dims {v} are not allowed; each dim is -1 (variable) or >= 1")
        return v


class Signature(_M):
    """The I/O a version promises; stored in ModelVersion.signature.

    `contract_input` names the input whose last dim holds the feature contract's features, in
    contract order; it is only consulted when the version has a feature contract.
    """

    inputs: list[TensorSpec] = Field(min_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    contract_input: str = "features"

    @model_validator(mode="after")
    def _unique(self) -> Signature:
        names = [t.name for t in (*self.inputs, *self.outputs)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tensor names must be unique across inputs and outputs: {dupes}")
        return self


class EntryManifest(_M):
    """Written beside config.pbtxt so a rewrite of the same version is a no-op."""

    model_id: str
    version: int
    framework: Framework
    weights_hash: str
    rendering: Rendering
    config_sha256: str
    feature_contract: str | None = None


def resolve_signature(version: ModelVersion, contract: FeatureContract | None = None) -> Signature:
    """Parse the version's signature and bind it to its feature contract.

    The contract fixes the width of the contract input (a -1 dim becomes the feature count) and
    must fit its dtype: a feature that would not convert losslessly into the tensor is refused
    here, at deploy time, rather than silently rounded at request time.
    """
    label = f"{version.model_id}@{version.version}"
    if not version.signature:
        raise SpecError(
            f"version {label} has no signature; Triton needs one: register it with "
            "signature {inputs: [{name, datatype, dims}], outputs: [...]}"
        )
    try:
        sig = Signature.model_validate(version.signature)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "signature"
        raise SpecError(
            f"version {label} has an invalid signature at {where}: {first['msg']}"
        ) from None
    if contract is None:
        return sig
    if version.feature_contract_ref and version.feature_contract_ref != contract.ref:
        raise SpecError(
            f"version {label} uses feature contract {version.feature_contract_ref}, "
            f"not {contract.ref}"
        )
    target = next((t for t in sig.inputs if t.name == sig.contract_input), None)
    if target is None:
        raise SpecError(
            f"version {label} has feature contract {contract.ref} but no input named "
            f"{sig.contract_input!r} to carry it; inputs: {[t.name for t in sig.inputs]}"
        )
    n = len(contract.features)
    if target.dims[-1] not in (-1, n):
        raise SpecError(
            f"input {target.name!r} of {label} has {target.dims[-1]} feature columns but "
            f"contract {contract.ref} has {n} features"
        )
    tensor_dtype = _AS_FEATURE_DTYPE.get(target.datatype)
    for feature in contract.features:
        if tensor_dtype is None or not widens(feature.dtype, tensor_dtype):
            raise SpecError(
                f"feature {feature.name!r} of contract {contract.ref} is {feature.dtype}, which "
                f"input {target.name!r} ({target.datatype}) of {label} cannot hold exactly"
            )
    bound = target.model_copy(update={"dims": [*target.dims[:-1], n]})
    inputs = [bound if t.name == target.name else t for t in sig.inputs]
    return sig.model_copy(update={"inputs": inputs})


def _pbtxt_tensor(t: TensorSpec, batched: bool) -> str:
    dtype = "TYPE_STRING" if t.datatype == "BYTES" else f"TYPE_{t.datatype}"
    dims = t.dims if batched else [-1, *t.dims]
    return (
        f'  {{\n    name: "{t.name}"\n    data_type: {dtype}\n'
        f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}"
    )


def _pbtxt_params(params: dict[str, str]) -> list[str]:
    return [
        f'parameters: {{\n  key: "{k}"\n  value: {{ string_value: {json.dumps(v)} }}\n}}'
        for k, v in params.items()
    ]


def render_config(
    version: ModelVersion,
    signature: Signature,
    rendering: Rendering,
    *,
    name: str | None = None,
    contract: FeatureContract | None = None,
    instances: int = 1,
    threads: int = 1,
    batch_delay_us: int = 0,
) -> str:
    """The config.pbtxt text for one entry.

    With max_batch_size > 0 Triton prepends the batch dim itself and the dynamic batcher merges
    queued requests; with 0 the batch dim is written out as -1 and every request runs alone.
    Native libtorch binds inputs by forward-argument name and outputs by config order, which is
    the signature's order.
    """
    if version.framework not in _NATIVE_PLATFORM:
        raise SpecError(
            f"framework {version.framework.value!r} is not served by Triton; "
            f"allowed: {', '.join(f.value for f in _NATIVE_PLATFORM)}"
        )
    name = name or triton_model_name(version.model_id, version.version)
    mbs = version.runtime_requirements.max_batch_size
    batched = mbs > 0
    lines = [f'name: "{name}"']
    if rendering == "native":
        lines.append(f'platform: "{_NATIVE_PLATFORM[version.framework]}"')
        kind = "KIND_GPU" if version.runtime_requirements.gpu_class else "KIND_CPU"
    elif rendering == "portable":
        lines.append('backend: "python"')
        kind = "KIND_CPU"
    else:
        raise SpecError(f"rendering {rendering!r} is not allowed; allowed: portable, native")
    lines.append(f"max_batch_size: {mbs}")
    lines.append("input [\n" + ",\n".join(_pbtxt_tensor(t, batched) for t in signature.inputs))
    lines.append("]")
    lines.append("output [\n" + ",\n".join(_pbtxt_tensor(t, batched) for t in signature.outputs))
    lines.append("]")
    if batched:
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {batch_delay_us}\n}}")
    lines.append(f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]")
    params = {
        "modelops.model_id": version.model_id,
        "modelops.version": str(version.version),
        "modelops.weights_sha256": version.weights_hash,
    }
    if contract is not None:
        params["modelops.feature_contract"] = contract.ref
        params["modelops.feature_names"] = ",".join(f.name for f in contract.features)
    if rendering == "portable":
        params["modelops.framework"] = version.framework.value
        params["modelops.artifact"] = _ARTIFACT_NAMES[(version.framework, rendering)]
        params["modelops.threads"] = str(threads)
    lines.extend(_pbtxt_params(params))
    return "\n".join(lines) + "\n"


def _extract_tar(tar_path: Path, dest: Path) -> None:
    """Refuse links and paths that escape dest: the tar is verified, but not necessarily ours."""
    with tarfile.open(tar_path) as tar:
        tar.extractall(dest, filter="data")


class RepositoryWriter:
    """Writes and removes entries under one Triton model-repository root."""

    def __init__(
        self,
        root: Path,
        store: ArtifactStore,
        *,
        instances: int = 1,
        threads: int = 1,
        batch_delay_us: int = 0,
    ) -> None:
        """`threads` is per instance for the portable rendering; 1 suits a small host best."""
        self.root = Path(root).absolute()
        self.store = store
        self.instances = instances
        self.threads = threads
        self.batch_delay_us = batch_delay_us
        self._staging = self.root.parent / f".{self.root.name}.staging"

    def path_for(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise SpecError(f"invalid Triton model name {name!r}")
        return self.root / name

    def entries(self) -> set[str]:
        """Entry names on disk (loaded or not); hidden and partial directories never count."""
        if not self.root.is_dir():
            return set()
        return {
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / "config.pbtxt").is_file()
        }

    def manifest(self, name: str) -> EntryManifest | None:
        path = self.path_for(name) / MANIFEST
        try:
            return EntryManifest.model_validate_json(path.read_text())
        except (FileNotFoundError, ValidationError):
            return None

    def write(
        self,
        version: ModelVersion,
        *,
        rendering: Rendering = "portable",
        contract: FeatureContract | None = None,
        force: bool = False,
    ) -> Path:
        """Write (or keep) the entry for `version`; returns its directory.

        An existing entry with the same manifest is kept only once its files are rehashed
        against the registered weights_hash, the rendered config and the shipped model.py
        (`entry_problem`): the manifest is as writable as the bytes it describes, and a copy
        that does not match is rewritten from the verified store. An intact entry is kept as
        is, so reconciling twice rewrites nothing. Raises IntegrityError, with no entry left
        behind, if the stored weights do not match their sha256.
        """
        name = triton_model_name(version.model_id, version.version)
        signature = resolve_signature(version, contract)
        config = render_config(
            version,
            signature,
            rendering,
            name=name,
            contract=contract,
            instances=self.instances,
            threads=self.threads,
            batch_delay_us=self.batch_delay_us,
        )
        manifest = EntryManifest(
            model_id=version.model_id,
            version=version.version,
            framework=version.framework,
            weights_hash=version.weights_hash,
            rendering=rendering,
            config_sha256=hashlib.sha256(config.encode()).hexdigest(),
            feature_contract=contract.ref if contract else None,
        )
        dest = self.path_for(name)
        if (
            not force
            and self.manifest(name) == manifest
            and self.entry_problem(version, rendering, config) is None
        ):
            return dest

        self._staging.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=self._staging, prefix=f"{name}."))
        try:
            files = stage / "1"
            files.mkdir()
            artifact = _ARTIFACT_NAMES[(version.framework, rendering)]
            if version.framework is Framework.tensorflow and rendering == "native":
                tar = self.store.fetch(version.weights_hash, stage / "weights.tar")
                _extract_tar(tar, files / artifact)
                tar.unlink()
            else:
                self.store.fetch(version.weights_hash, files / artifact)
            if rendering == "portable":
                shutil.copyfile(PYTHON_MODEL_SOURCE, files / "model.py")
            (stage / "config.pbtxt").write_text(config)
            (stage / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
            os.chmod(stage, 0o755)
            self._swap_in(stage, dest)
        except BaseException:
            # IntegrityError included: unverified bytes die with the staging directory.
            shutil.rmtree(stage, ignore_errors=True)
            raise
        finally:
            with suppress(OSError):
                self._staging.rmdir()  # only if empty: a concurrent write may be staging
        return dest

    def entry_problem(self, version: ModelVersion, rendering: Rendering, config: str) -> str | None:
        """Why the entry on disk is not exactly what `write` would produce, or None.

        Also drops the Python stub's bytecode cache: it is derived from model.py, cannot be
        checked against anything, and Python would run it in place of the verified source.
        """
        dest = self.path_for(triton_model_name(version.model_id, version.version))
        files = dest / "1"
        artifact = _ARTIFACT_NAMES[(version.framework, rendering)]
        if version.framework is Framework.tensorflow and rendering == "native":
            # An extracted SavedModel has no single hash to check: extract it afresh.
            return "an extracted SavedModel is rewritten from its verified tar before a load"
        try:
            versions = sorted(p.name for p in dest.iterdir() if p.is_dir() and p.name.isdigit())
            if versions != ["1"]:
                return f"version directories {versions}; only 1 is written"
            shutil.rmtree(files / "__pycache__", ignore_errors=True)
            expected = {artifact, "model.py"} if rendering == "portable" else {artifact}
            found = {p.name for p in files.iterdir()}
            if found != expected:
                return f"files {sorted(found)} in version 1; expected {sorted(expected)}"
            if sha256_file(dest / "config.pbtxt") != hashlib.sha256(config.encode()).hexdigest():
                return "config.pbtxt differs from the rendered config"
            if rendering == "portable" and sha256_file(files / "model.py") != sha256_file(
                PYTHON_MODEL_SOURCE
            ):
                return "model.py differs from the shipped model file"
            actual = sha256_file(files / artifact)
        except OSError as exc:
            return f"unreadable: {exc}"
        if actual != version.weights_hash:
            return (
                f"{artifact} hashes to {actual}, not the registered weights {version.weights_hash}"
            )
        return None

    def _swap_in(self, stage: Path, dest: Path) -> None:
        """Rename, not copy: Triton sees the old entry or the new one, never a mix."""
        self.root.mkdir(parents=True, exist_ok=True)
        old = None
        if dest.exists():
            old = self._staging / f"{dest.name}.old.{uuid.uuid4().hex}"
            os.replace(dest, old)
        os.replace(stage, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def remove(self, name: str) -> bool:
        """Delete an entry (unload it first); False if there was none."""
        dest = self.path_for(name)
        if not dest.exists():
            return False
        self._staging.mkdir(parents=True, exist_ok=True)
        trash = self._staging / f"{name}.removed.{uuid.uuid4().hex}"
        os.replace(dest, trash)
        shutil.rmtree(trash, ignore_errors=True)
        with suppress(OSError):
            self._staging.rmdir()  # only if empty: a concurrent write may be staging
        return True
