"""What the registry hands back, and the small encoders its rows share.

Records live apart from the statements so that readers (sensors, the CLI, the controller)
can name them without pulling in the write paths.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field

from modelops.spec import ModelVersion, State

__all__ = [
    "Clock",
    "IRREVERSIBLE_OVERRIDE",
    "SLO_NOT_MEASURED_OVERRIDE",
    "OVERRIDE_KINDS",
    "DatasetRecord",
    "DatasetInput",
    "LiveState",
    "VersionKey",
    "TransitionResult",
    "ApprovalRecord",
    "ModelDependents",
    "Candidate",
    "AuditRef",
]

Clock = Callable[[], datetime]
IRREVERSIBLE_OVERRIDE = "promote_irreversible"
SLO_NOT_MEASURED_OVERRIDE = "slo_not_measured"
OVERRIDE_KINDS = (IRREVERSIBLE_OVERRIDE, SLO_NOT_MEASURED_OVERRIDE)


class DatasetRecord(BaseModel):
    name: str
    version: int
    kind: str
    uri: str
    content_hash: str | None
    created_at: str


class DatasetInput(BaseModel):
    """A dataset version as a caller holds it, registered if absent by `register_candidate`.

    `kind` None takes the kind of the role it fills (training data: dataset; eval set:
    eval_set), so a caller that knows no better cannot file one as the other.
    """

    name: str
    version: int
    uri: str
    content_hash: str | None = None
    kind: Literal["dataset", "eval_set"] | None = None


class LiveState(NamedTuple):
    """One version's state on one slice, as a fleet-wide scan returns it (sensors read these)."""

    model_id: str
    version: int
    slice: str
    state: State
    percent: int | None
    since: datetime


class VersionKey(NamedTuple):
    """A tuple, not a model: lookups return thousands, and each object is GC work."""

    model_id: str
    version: int

    def __str__(self) -> str:
        return f"{self.model_id}@{self.version}"


class TransitionResult(BaseModel):
    model_id: str
    version: int
    slice: str
    from_state: State
    to_state: State
    percent: int | None = None
    generation: int
    deprecated_version: int | None = None
    restored_version: int | None = None
    caveats: list[str] = Field(default_factory=list)
    audit_id: int
    changed: bool = True
    note: str = ""  # why nothing changed, when `changed` is False


class ApprovalRecord(BaseModel):
    model_id: str
    version: int
    slice: str
    target: State
    approver: str
    team: str
    epoch: int


class ModelDependents(BaseModel):
    model_id: str
    version: int
    child_versions: list[VersionKey]
    downstream_models: list[str]


class Candidate(BaseModel):
    """What `register_candidate` settled, in one transaction, for the asset to report on."""

    version: ModelVersion
    created: bool  # False: this training run already had a version, and nothing was written
    contract_ref: str | None
    # slice -> its PROMOTED version other than this one, read under the same transaction
    prod_versions: dict[str, int] = Field(default_factory=dict)


class AuditRef(NamedTuple):
    """An audit entry as the rollback paths read it back."""

    id: int
    version: int | None
    action: str
    actor: str
    ts: str
    payload: dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


def canonical(obj: Any) -> str:
    """The one JSON spelling of stored payloads, so equal values compare equal as text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def parse_ts(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def dump(obj: BaseModel | None) -> dict[str, Any] | None:
    return obj.model_dump(mode="json") if obj is not None else None


def load(cls: type[BaseModel], raw: dict[str, Any] | None) -> Any:
    return cls.model_validate(raw) if raw else None
