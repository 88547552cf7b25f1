"""What the gateway records per request, and the sink it hands records to.

The gateway never waits on the log: it submits to a PredictionSink, which batches
asynchronously; a full sink drops and counts rather than slowing the user's request.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PredictionRecord", "Outcome", "GatewayEvent", "PredictionSink"]


class PredictionRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str
    ts: float  # unix seconds
    model_id: str
    version: int
    arm: str  # prod | canary | ab | shadow | fallback
    slice: str
    user_bucket: int | None = None
    user_hash: str | None = Field(
        default=None,
        description="keyed hash of the user key (serving.predlog.userhash), never the raw id: "
        "windows aggregate per user with it",
    )
    segment: str | None = Field(
        default=None,
        description="the request's data slice (e.g. a country), for protected-slice tests",
    )
    latency_ms: float
    error: str | None = None  # None on success; a short code otherwise (timeout, backend_5xx…)
    outputs: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = Field(
        default=None, description="only when the model's policy asks (for replay)"
    )
    features: dict[str, Any] | None = None
    prompt_tokens: int | None = None  # LLM requests: for the prompt-length canary check


class Outcome(BaseModel):
    """A label or click posted after the fact; joins to its prediction by request id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    ts: float
    name: str = "label"
    value: float


class GatewayEvent(BaseModel):
    """Something the data plane did on its own that the control plane must hear about,
    e.g. a circuit breaker taking a candidate out of rotation."""

    model_config = ConfigDict(extra="forbid")

    ts: float
    kind: str  # breaker_open | breaker_closed | contract_breaking | shadow_dropped
    model_id: str
    slice: str
    version: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class PredictionSink(Protocol):
    def submit(self, record: PredictionRecord) -> bool:
        """Queue a record without blocking; False if it was dropped (queue full)."""
        ...

    def submit_outcome(self, outcome: Outcome) -> bool: ...

    def submit_event(self, event: GatewayEvent) -> bool: ...

    def close(self) -> None: ...
