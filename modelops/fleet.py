"""The fleet declaration: the YAML a platform team writes to put models under modelops.

It lives in the core (plain pydantic, no Dagster) so that assets, jobs and sensors can all
read it without importing each other.

Each model's `spec` is the core's `ModelSpec`, validated by the core itself; what this file
adds is what Dagster needs to build the model's assets, checks, schedule and sensors: how to
train it, which data it reads, its offline gates and its online policy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelops.contracts import FeatureContract
from modelops.spec import ModelSpec

__all__ = [
    "DatasetDecl",
    "GatePolicy",
    "OnlinePolicy",
    "PolicyDurations",
    "ModelDecl",
    "Fleet",
    "load_fleet",
    "CANARY_LADDER",
]

CANARY_LADDER = (1, 5, 10)
_TRAINER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_CRON = re.compile(r"^(\S+\s+){4}\S+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetDecl(_Strict):
    """A dataset or eval set produced outside Dagster: snapshot files v1.npz, v2.npz, ..."""

    name: str
    kind: str = Field(default="dataset", pattern="^(dataset|eval_set)$")
    directory: str | None = Field(
        default=None,
        description="where the snapshots are; unset means $MODELOPS_HOME/data/NAME",
    )
    description: str = ""


class GatePolicy(_Strict):
    """Offline gates; each failing gate blocks promotion (asset check at ERROR severity)."""

    metric: str = Field(default="auc", description="the offline metric the gates compare")
    max_regression: float = Field(
        default=0.01, ge=0, description="allowed drop against the current prod version"
    )
    max_slice_regression: float = Field(
        default=0.03, ge=0, description="allowed drop on any single slice against prod"
    )
    fairness_max_gap: float = Field(
        default=0.15, ge=0, description="allowed spread of the metric across protected slices"
    )
    latency_p99_ms: float = Field(
        default=50.0, gt=0, description="p99 of single-request inference in the real Triton"
    )
    memory_mb: float = Field(default=2048.0, gt=0, description="resident memory of the model")
    slo_requests: int = Field(default=200, ge=20, description="timed requests for the SLO gate")


class OnlinePolicy(_Strict):
    """What the online-metrics sensor holds a live candidate to (besides spec.policy)."""

    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_latency_p99_ms: float = Field(default=250.0, gt=0)
    max_latency_ratio: float = Field(
        default=2.0,
        ge=1,
        description="a latency breach also needs the candidate's p99 at this multiple of prod's "
        "over the same window: a slow host slows both, a slow model only the candidate",
    )
    max_primary_drop: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="roll back when the candidate's primary metric is confidently below "
        "prod * (1 - this)",
    )
    min_requests: int = Field(default=50, ge=1, description="requests before latency/errors count")


class PolicyDurations(_Strict):
    """How long each stage lasts. Production uses days; the demo compresses to seconds."""

    shadow_s: float = Field(default=7 * 86400.0, gt=0, description="at most this long in shadow")
    shadow_min_s: float = Field(default=3600.0, ge=0, description="at least this long in shadow")
    canary_step_s: float = Field(default=3600.0, ge=0, description="dwell at each canary step")
    ab_min_s: float = Field(default=14 * 86400.0, ge=0, description="A/B at least this long")
    watch_s: float = Field(default=48 * 3600.0, ge=0, description="post-promotion watch")
    sensor_interval_s: int = Field(default=30, ge=1, description="sensor minimum interval")


class ModelDecl(_Strict):
    spec: ModelSpec
    trainer: str = Field(description="module:function that trains and exports the model")
    trainer_params: dict[str, Any] = Field(default_factory=dict)
    dataset: str
    eval_set: str
    feature_contract: str | None = Field(
        default=None, description="name of a contract in the fleet's feature_contracts"
    )
    refresh_cron: str | None = Field(default=None, description="weight refresh schedule")
    gates: GatePolicy = Field(default_factory=GatePolicy)
    online: OnlinePolicy = Field(default_factory=OnlinePolicy)

    @field_validator("trainer")
    @classmethod
    def _trainer(cls, v: str) -> str:
        if not _TRAINER.match(v):
            raise ValueError(f"trainer {v!r} is not allowed; use module.path:function")
        return v

    @field_validator("refresh_cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and not _CRON.match(v.strip()):
            raise ValueError(f"refresh_cron {v!r} is not a 5-field cron expression")
        return v

    @model_validator(mode="after")
    def _checkpoint_cadence(self) -> ModelDecl:
        """A continuous learner's refresh is its checkpoint: the cadence comes from the spec,
        so the schedule and the spec cannot disagree."""
        cont = self.spec.continuous
        if cont is None:
            return self
        hours = cont.checkpoint_every_hours
        cron = "0 0 * * *" if hours == 24 else f"0 */{hours} * * *"
        if self.refresh_cron is None:
            self.refresh_cron = cron
        elif self.refresh_cron.split()[1:] != cron.split()[1:]:  # the minute may stagger
            raise ValueError(
                f"model {self.model_id!r} is a continuous learner: its refresh schedule is "
                f"{cron!r} (any minute), from spec.continuous.checkpoint_every_hours; got "
                f"refresh_cron {self.refresh_cron!r}"
            )
        return self

    @property
    def model_id(self) -> str:
        return self.spec.model_id


class Fleet(_Strict):
    datasets: list[DatasetDecl]
    feature_contracts: list[FeatureContract] = Field(default_factory=list)
    durations: PolicyDurations = Field(default_factory=PolicyDurations)
    canary_ladder: list[int] = Field(default_factory=lambda: list(CANARY_LADDER), min_length=1)
    models: list[ModelDecl] = Field(min_length=1)

    @model_validator(mode="after")
    def _refs(self) -> Fleet:
        kinds = {d.name: d.kind for d in self.datasets}
        if len(kinds) != len(self.datasets):
            raise ValueError("dataset names must be unique")
        contracts = {c.name for c in self.feature_contracts}
        ids = [m.model_id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError("model_id values must be unique across the fleet")
        for m in self.models:
            for ref, want in ((m.dataset, "dataset"), (m.eval_set, "eval_set")):
                if kinds.get(ref) != want:
                    allowed = sorted(n for n, k in kinds.items() if k == want)
                    raise ValueError(
                        f"model {m.model_id!r}: {want} {ref!r} is not declared; allowed: {allowed}"
                    )
            if m.feature_contract is not None and m.feature_contract not in contracts:
                raise ValueError(
                    f"model {m.model_id!r}: feature_contract {m.feature_contract!r} is not "
                    f"declared; allowed: {sorted(contracts)}"
                )
        if any(not 1 <= p <= 10 for p in self.canary_ladder) or self.canary_ladder != sorted(
            set(self.canary_ladder)
        ):
            raise ValueError("canary_ladder must be strictly increasing percents within 1..10")
        return self

    def model(self, model_id: str) -> ModelDecl:
        for m in self.models:
            if m.model_id == model_id:
                return m
        raise KeyError(model_id)

    def dataset(self, name: str) -> DatasetDecl:
        return next(d for d in self.datasets if d.name == name)

    def contract(self, name: str) -> FeatureContract:
        return next(c for c in self.feature_contracts if c.name == name)


def load_fleet(path: str | Path) -> Fleet:
    """Load and validate a fleet file; errors name the file, the field and what is allowed."""
    from modelops.yamlio import load_yaml_model

    return load_yaml_model(Path(path), Fleet)
