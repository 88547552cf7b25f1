"""Feature contracts: what a model expects from the feature store, checked against what it has.

A model version is trained against a fixed set of features. The store evolves on its own
schedule, so every schema change is classified up front as harmless, a compatible extension
or a breaking change, instead of being discovered as bad predictions in production.
"""

from __future__ import annotations

import os
import re
import tempfile
from abc import ABC, abstractmethod
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelops.errors import NotFoundError, SpecError
from modelops.yamlio import load_yaml_model

__all__ = [
    "DType",
    "Feature",
    "FeatureContract",
    "FeatureSchema",
    "ContractStatus",
    "ReasonKind",
    "ContractReason",
    "ContractCheck",
    "LOSSLESS_WIDENINGS",
    "widens",
    "parse_contract_ref",
    "validate_contract",
    "FeatureSchemaSource",
    "FileSchemaSource",
    "write_schema",
    "load_contract_file",
]


class DType(StrEnum):
    """The value types a feature can have; deliberately few so compatibility is decidable."""

    BOOL = "bool"
    INT8 = "int8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    FLOAT16 = "float16"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"
    BYTES = "bytes"
    TIMESTAMP = "timestamp"


# Direct lossless widenings: src -> dst means every src value is exactly representable as dst.
# `widens` uses the reflexive-transitive closure of this table. Deliberate omissions:
#   int64 -> float64 is NOT lossless (float64 has a 53-bit significand);
#   int32 -> float32 is NOT lossless (24-bit significand);
#   string, bytes and timestamp only ever equal themselves.
#
#   bool    -> int8, int16, int32, int64, float16, float32, float64
#   int8    -> int16, float32, float64
#   int16   -> int32, float32, float64
#   int32   -> int64, float64
#   float16 -> float32
#   float32 -> float64
_DIRECT_WIDENINGS: dict[DType, frozenset[DType]] = {
    DType.BOOL: frozenset(
        {
            DType.INT8,
            DType.INT16,
            DType.INT32,
            DType.INT64,
            DType.FLOAT16,
            DType.FLOAT32,
            DType.FLOAT64,
        }
    ),
    DType.INT8: frozenset({DType.INT16, DType.FLOAT32, DType.FLOAT64}),
    DType.INT16: frozenset({DType.INT32, DType.FLOAT32, DType.FLOAT64}),
    DType.INT32: frozenset({DType.INT64, DType.FLOAT64}),
    DType.FLOAT16: frozenset({DType.FLOAT32}),
    DType.FLOAT32: frozenset({DType.FLOAT64}),
}


def _closure(direct: dict[DType, frozenset[DType]]) -> dict[DType, frozenset[DType]]:
    """Reflexive-transitive closure, computed once so `widens` is a set lookup."""
    out: dict[DType, frozenset[DType]] = {}
    for src in DType:
        seen = {src}
        stack = [src]
        while stack:
            for nxt in direct.get(stack.pop(), frozenset()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        out[src] = frozenset(seen)
    return out


LOSSLESS_WIDENINGS: dict[DType, frozenset[DType]] = _closure(_DIRECT_WIDENINGS)
"""For each dtype, every dtype it converts into without loss (including itself)."""


def widens(src: DType, dst: DType) -> bool:
    """True if every value of `src` is exactly representable in `dst` (reflexive)."""
    return DType(dst) in LOSSLESS_WIDENINGS[DType(src)]


_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_NAME_RULE = "allowed: letters, digits, '_', '.', '-' (at least one character)"
_REF_RE = re.compile(r"([A-Za-z0-9_.\-]+)@([0-9]+)")


def _check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid name; {_NAME_RULE}")
    return value


def _check_unique(features: list[Feature]) -> list[Feature]:
    seen: set[str] = set()
    dupes: list[str] = []
    for feature in features:
        if feature.name in seen and feature.name not in dupes:
            dupes.append(feature.name)
        seen.add(feature.name)
    if dupes:
        names = ", ".join(repr(d) for d in dupes)
        raise ValueError(f"duplicate feature names {names}; allowed: each name at most once")
    return features


class Feature(BaseModel):
    """One named, typed column the model reads; `definition_ref` lets renames be recognised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: DType
    nullable: bool = False
    definition_ref: str | None = Field(default=None, min_length=1)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value)


class FeatureContract(BaseModel):
    """The features a model version was trained on, pinned by name and version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: int = Field(ge=1)
    features: list[Feature]

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value)

    @field_validator("features")
    @classmethod
    def _unique_names(cls, value: list[Feature]) -> list[Feature]:
        return _check_unique(value)

    @property
    def ref(self) -> str:
        """`NAME@VERSION`, the form model specs use to point at a contract."""
        return f"{self.name}@{self.version}"

    def by_name(self) -> dict[str, Feature]:
        """Features keyed by name, in declaration order."""
        return {f.name: f for f in self.features}


class FeatureSchema(BaseModel):
    """What the feature store supplies right now; versioned so checks can be cached."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    features: list[Feature]

    @field_validator("features")
    @classmethod
    def _unique_names(cls, value: list[Feature]) -> list[Feature]:
        return _check_unique(value)

    def by_name(self) -> dict[str, Feature]:
        """Features keyed by name, in declaration order."""
        return {f.name: f for f in self.features}


def parse_contract_ref(ref: str) -> tuple[str, int]:
    """Split `NAME@VERSION`; model specs carry contracts as strings, so reject bad ones early."""
    match = _REF_RE.fullmatch(ref.strip()) if isinstance(ref, str) else None
    if match is None or int(match.group(2)) < 1:
        raise SpecError(
            f"invalid contract reference {ref!r}: expected NAME@VERSION, e.g. churn_features@3 "
            f"(NAME: letters, digits, '_', '.', '-'; VERSION: an integer >= 1)"
        )
    return match.group(1), int(match.group(2))


class ContractStatus(StrEnum):
    """Overall verdict; only BREAKING_CHANGE should block a deployment."""

    OK = "OK"
    COMPATIBLE_EXTENSION = "COMPATIBLE_EXTENSION"
    BREAKING_CHANGE = "BREAKING_CHANGE"


class ReasonKind(StrEnum):
    """Why a contract feature and the store's schema differ."""

    DROPPED = "DROPPED"
    RENAMED = "RENAMED"
    DTYPE_NARROWED = "DTYPE_NARROWED"
    DTYPE_WIDENED = "DTYPE_WIDENED"
    DTYPE_INCOMPATIBLE = "DTYPE_INCOMPATIBLE"
    NOW_NULLABLE = "NOW_NULLABLE"
    NOW_NOT_NULLABLE = "NOW_NOT_NULLABLE"
    ADDED = "ADDED"


class ContractReason(BaseModel):
    """One difference, with a sentence an on-call engineer can act on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: str
    kind: ReasonKind
    breaking: bool
    detail: str


class ContractCheck(BaseModel):
    """The full result of one check; keyed by schema version so it can be cached."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: ContractStatus
    reasons: list[ContractReason]
    schema_version: int
    contract_ref: str

    @property
    def breaking(self) -> bool:
        """Shorthand for gates that only care whether to block."""
        return self.status is ContractStatus.BREAKING_CHANGE


def validate_contract(contract: FeatureContract, schema: FeatureSchema) -> ContractCheck:
    """Compare what the model expects with what the store supplies, reporting every difference.

    All reasons are collected rather than stopping at the first, so one run tells the
    owner everything that has to be fixed.
    """
    supplied = schema.by_name()
    expected_names = {f.name for f in contract.features}
    rename_targets: set[str] = set()
    reasons: list[ContractReason] = []

    for want in contract.features:
        have = supplied.get(want.name)
        label = repr(want.name)
        if have is None:
            have = _rename_target(want, schema, expected_names, rename_targets)
            if have is None:
                reasons.append(
                    ContractReason(
                        feature=want.name,
                        kind=ReasonKind.DROPPED,
                        breaking=True,
                        detail=f"feature {label} is no longer supplied by the feature store "
                        f"(schema v{schema.version})",
                    )
                )
                continue
            rename_targets.add(have.name)
            reasons.append(
                ContractReason(
                    feature=want.name,
                    kind=ReasonKind.RENAMED,
                    breaking=True,
                    detail=f"feature {label} was renamed to {have.name!r} "
                    f"(same definition {want.definition_ref!r}); the model still reads "
                    f"{label}",
                )
            )
            label = f"{label} (now {have.name!r})"
        reasons.extend(_dtype_reasons(want, have, label))
        reasons.extend(_nullability_reasons(want, have, label))

    for extra in schema.features:
        if extra.name not in expected_names and extra.name not in rename_targets:
            reasons.append(
                ContractReason(
                    feature=extra.name,
                    kind=ReasonKind.ADDED,
                    breaking=False,
                    detail=f"feature {extra.name!r} ({extra.dtype}) is new in schema "
                    f"v{schema.version} and is not used by the model",
                )
            )

    return ContractCheck(
        status=_status(reasons),
        reasons=reasons,
        schema_version=schema.version,
        contract_ref=contract.ref,
    )


def _rename_target(
    want: Feature, schema: FeatureSchema, expected: set[str], taken: set[str]
) -> Feature | None:
    """A renamed feature keeps its definition; only unclaimed new names qualify."""
    if want.definition_ref is None:
        return None
    for candidate in schema.features:
        if (
            candidate.definition_ref == want.definition_ref
            and candidate.name not in expected
            and candidate.name not in taken
        ):
            return candidate
    return None


def _dtype_reasons(want: Feature, have: Feature, label: str) -> list[ContractReason]:
    wanted, supplied = want.dtype, have.dtype
    if supplied == wanted:
        return []
    if widens(supplied, wanted):
        kind, breaking = ReasonKind.DTYPE_WIDENED, False
        detail = (
            f"feature {label} is now {supplied}, which converts losslessly into the "
            f"model's {wanted}"
        )
    elif widens(wanted, supplied):
        kind, breaking = ReasonKind.DTYPE_NARROWED, True
        detail = (
            f"feature {label} is now {supplied}, wider than the model's {wanted}; "
            f"values may not fit"
        )
    else:
        kind, breaking = ReasonKind.DTYPE_INCOMPATIBLE, True
        detail = (
            f"feature {label} is now {supplied}, which does not convert to the model's {wanted}"
        )
    return [ContractReason(feature=want.name, kind=kind, breaking=breaking, detail=detail)]


def _nullability_reasons(want: Feature, have: Feature, label: str) -> list[ContractReason]:
    if have.nullable and not want.nullable:
        return [
            ContractReason(
                feature=want.name,
                kind=ReasonKind.NOW_NULLABLE,
                breaking=True,
                detail=f"feature {label} can now be null, but the model does not accept nulls",
            )
        ]
    if want.nullable and not have.nullable:
        return [
            ContractReason(
                feature=want.name,
                kind=ReasonKind.NOW_NOT_NULLABLE,
                breaking=False,
                detail=f"feature {label} is no longer nullable; the model accepts that",
            )
        ]
    return []


def _status(reasons: list[ContractReason]) -> ContractStatus:
    if any(r.breaking for r in reasons):
        return ContractStatus.BREAKING_CHANGE
    if reasons:
        return ContractStatus.COMPATIBLE_EXTENSION
    return ContractStatus.OK


class FeatureSchemaSource(ABC):
    """Where the store's schema comes from; the registry depends only on this interface."""

    @abstractmethod
    def current_version(self) -> int:
        """The newest schema version; must be cheap, since callers poll it to reuse checks."""

    @abstractmethod
    def get(self, version: int) -> FeatureSchema:
        """One schema version; NotFoundError if the source does not have it."""

    def current(self) -> FeatureSchema:
        """The newest schema; override if the backend can fetch it in one call."""
        return self.get(self.current_version())


_SCHEMA_FILE_RE = re.compile(r"v([1-9][0-9]*)\.yaml")


class _SchemaFile(BaseModel):
    """On-disk shape of `v{N}.yaml`; the version lives in the file name."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1)
    features: list[Feature]

    @field_validator("features")
    @classmethod
    def _unique_names(cls, value: list[Feature]) -> list[Feature]:
        return _check_unique(value)


class FileSchemaSource(FeatureSchemaSource):
    """Schemas as `v1.yaml`, `v2.yaml`, ... in one directory: the embedded default."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def versions(self) -> list[int]:
        """All versions present, ascending; SpecError if the directory is unusable."""
        if not self.directory.exists():
            raise SpecError(
                f"{self.directory}: feature schema directory does not exist; "
                f"expected a directory of v1.yaml, v2.yaml, ..."
            )
        if not self.directory.is_dir():
            raise SpecError(
                f"{self.directory}: not a directory; expected a directory of v1.yaml, v2.yaml, ..."
            )
        found = sorted(
            int(m.group(1))
            for entry in os.scandir(self.directory)
            if entry.is_file() and (m := _SCHEMA_FILE_RE.fullmatch(entry.name))
        )
        if not found:
            raise SpecError(
                f"{self.directory}: no feature schema files; expected files named "
                f"v1.yaml, v2.yaml, ..."
            )
        return found

    def current_version(self) -> int:
        """Highest N among `v{N}.yaml`; a directory listing, no parsing."""
        return self.versions()[-1]

    def path_for(self, version: int) -> Path:
        """Where schema `version` lives (whether or not it exists)."""
        return self.directory / f"v{version}.yaml"

    def get(self, version: int) -> FeatureSchema:
        """Parse `v{version}.yaml`; errors name the file and the field."""
        available = self.versions()
        if version not in available:
            listed = ", ".join(str(v) for v in available)
            raise NotFoundError(
                f"feature schema version {version} not found in {self.directory}; "
                f"available: {listed}"
            )
        path = self.path_for(version)
        parsed = load_yaml_model(path, _SchemaFile)
        if parsed.version is not None and parsed.version != version:
            raise SpecError(
                f"{path}: version: {parsed.version} does not match the file name; "
                f"allowed: {version} or omit the field"
            )
        return FeatureSchema(version=version, features=parsed.features)


def write_schema(directory: str | Path, schema: FeatureSchema) -> Path:
    """Write `v{N}.yaml` atomically so a concurrent reader never sees half a schema."""
    target_dir = Path(directory)
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"v{schema.version}.yaml"
    body = {
        "version": schema.version,
        "features": [f.model_dump(mode="json", exclude_none=True) for f in schema.features],
    }
    text = yaml.safe_dump(body, sort_keys=False)
    fd, tmp = tempfile.mkstemp(prefix=".v", suffix=".tmp", dir=target_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_contract_file(path: str | Path) -> FeatureContract:
    """Read a contract YAML file (`name`, `version`, `features`); SpecError in one line."""
    return load_yaml_model(path, FeatureContract)
