"""The contract schema: what a model is (ModelSpec) and what one version of it is (ModelVersion).

A version is a contract, not a weights file: every field here is something the registry
enforces at deploy time or at request time, so none of it is free-form.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelops.state_stores.config import StateStoreSpec

__all__ = [
    "Tier",
    "RollbackClass",
    "ModelClass",
    "Framework",
    "State",
    "ShadowMode",
    "Guardrail",
    "ABContract",
    "ShadowThresholds",
    "DriftThresholds",
    "DecisionPolicy",
    "ContinuousLearning",
    "ModelSpec",
    "CodeRef",
    "LLMRuntime",
    "RuntimeRequirements",
    "StateChange",
    "ModelVersion",
    "VersionMeta",
    "DatasetRef",
    "load_spec_file",
    "load_version_meta_file",
    "parse_name_version",
    "MAX_VERSION",
    "DEFAULT_SLICE",
]

DEFAULT_SLICE = "global"
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


class Tier(StrEnum):
    L0 = "L0"
    L1 = "L1"
    L2 = "L2"
    L3 = "L3"


class RollbackClass(StrEnum):
    STATELESS = "STATELESS"
    STATE_SNAPSHOT = "STATE_SNAPSHOT"
    IRREVERSIBLE = "IRREVERSIBLE"


class ModelClass(StrEnum):
    dnn = "dnn"
    llm = "llm"
    batch = "batch"
    escape_hatch = "escape_hatch"


class Framework(StrEnum):
    pytorch = "pytorch"
    tensorflow = "tensorflow"
    onnx = "onnx"
    vllm_engine = "vllm_engine"


class State(StrEnum):
    REGISTERED = "REGISTERED"
    OFFLINE_PASSED = "OFFLINE_PASSED"
    FAILED = "FAILED"
    APPROVED_SHADOW = "APPROVED_SHADOW"
    SHADOW = "SHADOW"
    APPROVED_CANARY = "APPROVED_CANARY"
    CANARY = "CANARY"
    AB_TEST = "AB_TEST"
    PROMOTED = "PROMOTED"
    ROLLED_BACK = "ROLLED_BACK"
    DEPRECATED = "DEPRECATED"
    ARCHIVED = "ARCHIVED"


class ShadowMode(StrEnum):
    live = "live"  # mirror live requests out of band
    replay = "replay"  # replay logged requests with their point-in-time features


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ValueError(
            f"{what} {value!r} is not allowed; use 1-128 chars of a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


# Versions are int4 columns on PostgreSQL; a larger one is a typo, refused before any query.
MAX_VERSION = 2**31 - 1


def parse_name_version(text: str, what: str = "reference") -> tuple[str, int]:
    """Parse NAME@VERSION, the one spelling used for datasets, eval sets and contracts."""
    from modelops.errors import SpecError

    name, sep, ver = text.rpartition("@")
    if not sep or not name or not ver.isdigit() or int(ver) < 1:
        raise SpecError(f"{what} {text!r} is malformed; allowed form is NAME@VERSION, e.g. ctr@3")
    if int(ver) > MAX_VERSION:
        raise SpecError(f"{what} {text!r}: version out of range; allowed: 1..{MAX_VERSION}")
    return name, int(ver)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, use_enum_values=False)


class Guardrail(_Strict):
    """A metric that must not cross its threshold; `higher_is_worse` says which way is bad."""

    metric: str
    threshold: float
    higher_is_worse: bool = True


class ShadowThresholds(_Strict):
    """When a shadow fails: the divergence engine's thresholds (the fields and defaults of
    `modelops.evaluation.shadow.ShadowPolicy`, kept equal by a test), plus which output holds
    the score. Here, in the spec, so every verdict is judged against the registered policy."""

    score_output: str | None = Field(
        default=None, description="output tensor holding the score; unset: the first output"
    )
    threshold: float = Field(default=0.5, description="decision threshold for 1-D scores")
    score_range: tuple[float, float] = (0.0, 1.0)
    bins: int = Field(default=20, ge=2)
    calibration_bins: int = Field(default=15, ge=2)
    min_pairs: int = Field(default=1000, ge=1)
    min_agreement: float = Field(default=0.95, ge=0, le=1)
    max_kl: float = Field(default=0.05, ge=0)
    max_js_distance: float = Field(default=0.1, ge=0, le=1)
    max_slice_js_distance: float = Field(default=0.15, ge=0, le=1)
    min_slice_pairs: int = Field(default=200, ge=1)
    max_ece_increase: float = Field(default=0.02, ge=0)
    max_latency_p99_ratio: float = Field(default=1.5, ge=1)
    max_error_rate_increase: float = Field(default=0.01, ge=0)

    @model_validator(mode="after")
    def _range(self) -> ShadowThresholds:
        if not self.score_range[1] > self.score_range[0]:
            raise ValueError("score_range must be (low, high) with high > low")
        return self


class DriftThresholds(_Strict):
    """When drift alerts: the fields and defaults of `modelops.evaluation.drift.DriftPolicy`,
    plus the window the drift sensor reads. Drift alerts; it never rolls back."""

    psi_threshold: float = Field(default=0.2, gt=0)
    js_threshold: float = Field(default=0.1, gt=0, le=1)
    min_rows: int = Field(default=500, ge=1)
    window_s: float = Field(default=3600.0, gt=0, description="recent prediction-log window")


class ABContract(_Strict):
    """What the registry plans an A/B test with on entry to AB_TEST, and holds it to.

    The defaults are the seed's production figures (a 5% rate, about 1M users a day, a 1%
    relative lift worth detecting); declare the model's own. The plan is the fixed-horizon
    sample size of `modelops.evaluation.ab.plan_ab` at these values."""

    baseline_rate: float = Field(
        default=0.05, gt=0, lt=1, description="the primary metric's prod rate per user"
    )
    relative_mde: float = Field(
        default=0.01, gt=0, lt=1, description="the relative lift (or drop) worth detecting"
    )
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="two-sided, for the plan")
    power: float = Field(default=0.8, gt=0.5, lt=1)
    daily_users: int = Field(default=1_000_000, ge=1, description="users entering the slice a day")
    layer_share: int = Field(
        default=100, ge=2, le=100, description="percent of its layer's users a test enrolls"
    )
    min_days: int = Field(
        default=14,
        ge=7,
        description="L2/L3: days in AB_TEST before PROMOTED, in whole weekly cycles, unless "
        "the sequential test concluded with its planned power",
    )

    @model_validator(mode="after")
    def _coherent(self) -> ABContract:
        if self.min_days % 7:
            raise ValueError(f"min_days {self.min_days} must be whole weeks (7, 14, 21, ...)")
        if not self.baseline_rate * (1 + self.relative_mde) < 1:
            raise ValueError("baseline_rate * (1 + relative_mde) must stay below 1")
        return self


class DecisionPolicy(_Strict):
    primary_metric: str
    higher_is_better: bool = True
    min_samples: int = Field(default=1000, ge=1)
    guardrails: list[Guardrail] = Field(default_factory=list)
    protected_slices: list[str] = Field(default_factory=list)
    fallback_on_breaking_contract: bool = Field(
        default=False,
        description="on a breaking feature contract: fall back to the last good version "
        "(True) or fail closed (False)",
    )
    log_inputs: bool = False
    ab: ABContract = Field(default_factory=ABContract)
    shadow: ShadowThresholds = Field(default_factory=ShadowThresholds)
    drift: DriftThresholds = Field(default_factory=DriftThresholds)


class ContinuousLearning(_Strict):
    """A continuous learner (design class C2): its online updates are published as hard
    checkpoints every N hours, each a version on the automated weight-refresh path, so prod
    serves an immutable checkpoint, never a mutating blob, and a rollback serves an older one.
    The hours divide a day so the cadence is one cron line (`0 */N * * *`)."""

    checkpoint_every_hours: int = Field(ge=1, le=24, description="checkpoint cadence")
    retain_checkpoints: int = Field(
        ge=2, le=1000, description="newest checkpoints kept restorable; older ones ARCHIVED"
    )

    @field_validator("checkpoint_every_hours")
    @classmethod
    def _divides_day(cls, v: int) -> int:
        if 24 % v:
            raise ValueError(
                f"checkpoint_every_hours {v} does not divide a day; allowed: 1, 2, 3, 4, 6, 8, "
                "12, 24"
            )
        return v


class ModelSpec(_Strict):
    """The logical model, stable across versions."""

    model_id: str
    owner_team: str
    tier: Tier
    rollback_class: RollbackClass
    model_class: ModelClass
    framework: Framework
    description: str = ""
    intended_purpose: str = Field(
        default="",
        description="what the model is for, who acts on its outputs and where it may not be "
        "used (EU AI Act Annex IV 1(a)); an L3 version is not promoted without it",
    )
    slices: list[str] = Field(default_factory=lambda: [DEFAULT_SLICE], min_length=1)
    policy: DecisionPolicy
    downstream_dependents: list[str] = Field(default_factory=list)
    state_stores: list[StateStoreSpec] = Field(
        default_factory=list,
        description="state a STATE_SNAPSHOT model keeps outside its weights: snapshotted on "
        "entry to CANARY and AB_TEST, restored by a rollback",
    )
    feeds_features: list[str] = Field(
        default_factory=list,
        description="features this model's outputs feed: a rollback flags them contaminated "
        "since promotion, and models whose contracts read them are trained on its outputs",
    )
    decay_window_days: float = Field(
        default=14.0,
        gt=0,
        le=365,
        description="after a rollback of an IRREVERSIBLE version, alert thresholds are relaxed "
        "this long, so the expected decay does not trigger a second rollback",
    )
    continuous: ContinuousLearning | None = Field(
        default=None, description="set for a continuous learner: its checkpoint cadence"
    )

    @field_validator("model_id")
    @classmethod
    def _model_id(cls, v: str) -> str:
        return _check_id(v, "model_id")

    @field_validator("owner_team")
    @classmethod
    def _team(cls, v: str) -> str:
        return _check_id(v, "owner_team")

    @field_validator("slices")
    @classmethod
    def _slices(cls, v: list[str]) -> list[str]:
        for s in v:
            _check_id(s, "slice")
        if len(set(v)) != len(v):
            raise ValueError("slices must be unique")
        return v

    @field_validator("downstream_dependents")
    @classmethod
    def _deps(cls, v: list[str]) -> list[str]:
        for d in v:
            _check_id(d, "downstream dependent model_id")
        return sorted(set(v))

    @model_validator(mode="after")
    def _coherent(self) -> ModelSpec:
        llm = self.model_class is ModelClass.llm
        if llm != (self.framework is Framework.vllm_engine):
            raise ValueError(
                "model_class 'llm' goes with framework 'vllm_engine' and only with it; "
                f"got model_class {self.model_class.value!r} with framework "
                f"{self.framework.value!r}"
            )
        if self.model_id in self.downstream_dependents:
            raise ValueError("a model cannot list itself as a downstream dependent")
        names = [s.name for s in self.state_stores]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"state_stores names must be unique; repeated: {', '.join(repeated)}")
        if self.state_stores and self.rollback_class is RollbackClass.STATELESS:
            raise ValueError(
                "a STATELESS model declares no state_stores; declare rollback_class "
                "STATE_SNAPSHOT for a model whose state lives outside its weights"
            )
        if self.continuous is not None and (
            self.tier is Tier.L3 or self.model_class is not ModelClass.dnn
        ):
            raise ValueError(
                "continuous (a checkpointing learner) needs an automated weight-refresh path: "
                f"allowed for model_class 'dnn' at tiers L0-L2; got {self.model_class.value!r} "
                f"at {self.tier.value}"
            )
        return self


class CodeRef(_Strict):
    repo: str
    commit_sha: str
    path: str | None = None

    @field_validator("commit_sha")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not _COMMIT.match(v):
            raise ValueError("commit_sha must be 7-40 lowercase hex characters")
        return v


class LLMRuntime(_Strict):
    max_context_length: int = Field(ge=1)
    kv_cache_gb_per_sequence: float = Field(gt=0)
    tokenizer_version: str
    draft_model: str | None = None


class RuntimeRequirements(_Strict):
    gpu_class: str | None = None
    mem_gb: float = Field(default=1.0, gt=0)
    compute_capability: str | None = None
    max_batch_size: int = Field(default=0, ge=0)
    llm: LLMRuntime | None = None


class StateChange(_Strict):
    slice: str
    state: State
    ts: datetime
    actor: str
    percent: int | None = None
    gate_results: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""


class DatasetRef(_Strict):
    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class VersionMeta(_Strict):
    """The optional parts of a version that a training run reports beside its weights."""

    runtime_requirements: RuntimeRequirements = Field(default_factory=RuntimeRequirements)
    preprocess: CodeRef | None = None
    postprocess: CodeRef | None = None
    training_code_version: CodeRef | None = None
    eval_metrics: dict[str, float] = Field(default_factory=dict)
    eval_slice_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    rollback_snapshot_uri: str | None = None
    drift_reference_uri: str | None = Field(
        default=None, description="binned training reference (modelops.evaluation.drift)"
    )
    drift_reference_hash: str | None = None
    downstream_dependents: list[str] = Field(default_factory=list)
    signature: dict[str, Any] = Field(default_factory=dict)
    checkpoint_at: datetime | None = Field(
        default=None, description="a continuous learner's checkpoint time (timezone-aware)"
    )

    @field_validator("checkpoint_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("checkpoint_at must carry a timezone, e.g. 2026-01-01T06:00:00Z")
        return v


class ModelVersion(_Strict):
    """One registered version: the full record the registry enforces."""

    model_id: str
    version: int = Field(ge=1)
    weights_uri: str
    weights_hash: str
    framework: Framework
    runtime_requirements: RuntimeRequirements = Field(default_factory=RuntimeRequirements)
    feature_contract_ref: str | None = None
    preprocess: CodeRef | None = None
    postprocess: CodeRef | None = None
    training_run_id: str
    training_data_version: DatasetRef
    training_code_version: CodeRef | None = None
    parent_model_version: int | None = None
    eval_set_version: DatasetRef
    eval_metrics: dict[str, float] = Field(default_factory=dict)
    eval_slice_metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    rollback_class: RollbackClass
    rollback_snapshot_uri: str | None = None
    drift_reference_uri: str | None = None
    drift_reference_hash: str | None = None
    tier: Tier
    state: dict[str, State] = Field(default_factory=dict)
    canary_percent: dict[str, int] = Field(default_factory=dict)
    state_history: list[StateChange] = Field(default_factory=list)
    downstream_dependents: list[str] = Field(default_factory=list)
    signature: dict[str, Any] = Field(default_factory=dict)
    checkpoint_at: datetime | None = None
    created_at: datetime

    @field_validator("weights_hash")
    @classmethod
    def _hash(cls, v: str) -> str:
        if not _SHA.match(v):
            raise ValueError("weights_hash must be 64 lowercase hex characters (sha256)")
        return v

    @property
    def archived(self) -> bool:
        return bool(self.state) and all(s is State.ARCHIVED for s in self.state.values())


def load_spec_file(path: str | Path) -> ModelSpec:
    """Load a model spec YAML; errors name the file, the field and what is allowed."""
    from modelops.yamlio import load_yaml_model

    return load_yaml_model(Path(path), ModelSpec)


def load_version_meta_file(path: str | Path) -> VersionMeta:
    from modelops.yamlio import load_yaml_model

    return load_yaml_model(Path(path), VersionMeta)
