"""Evidence: what the serving plane measures and the Dagster floor decides on.

Windows are what the prediction log produces and the sensors read; an SLO measurement is
what the Triton probe produces and the offline gate reads. They live in the core so that the
producer and the reader share one definition without the reader importing the serving plane.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "TIMEOUT_ERROR",
    "OutcomeStats",
    "SloMeasurement",
    "TokenStats",
    "WindowReader",
    "WindowStats",
]

TIMEOUT_ERROR = "timeout"  # the error code the gateway records for a backend timeout


class OutcomeStats(BaseModel):
    """Outcomes of one name (e.g. click) joined to a window's predictions by request id."""

    model_config = ConfigDict(extra="forbid")

    count: int
    mean: float  # for a 0/1 click outcome: the click rate among requests with an outcome


class TokenStats(BaseModel):
    """Prompt lengths of an LLM window; `values` (sorted) feeds the two-sample canary test."""

    model_config = ConfigDict(extra="forbid")

    count: int
    mean: float
    p50: float
    p99: float
    max: int
    values: list[int] | None = Field(
        default=None, description="every prompt length in the window, when asked for"
    )


class WindowStats(BaseModel):
    """One (model, version, arm, slice) series over [since_ts, until_ts)."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    version: int
    arm: str
    slice: str
    since_ts: float
    until_ts: float | None
    first_ts: float
    last_ts: float
    requests: int
    errors: int
    error_rate: float
    timeouts: int = Field(description=f"requests whose error is {TIMEOUT_ERROR!r}")
    timeout_rate: float
    latency_mean_ms: float = Field(description="over every request, failed ones included")
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    outcomes: dict[str, OutcomeStats] = Field(default_factory=dict)
    prompt_tokens: TokenStats | None = None


class WindowReader(Protocol):
    """What a sensor needs of the prediction log, so it can be typed without the serving plane."""

    def window(
        self,
        model_id: str,
        *,
        since_ts: float,
        until_ts: float | None = None,
        slice: str | None = None,
        version: int | None = None,
        with_prompt_tokens: bool = False,
    ) -> list[WindowStats]: ...


@dataclass(frozen=True)
class SloMeasurement:
    """What the candidate did in the real Triton."""

    p50_ms: float
    p99_ms: float
    requests: int
    rss_mb: float | None
    load_s: float
    triton_name: str
    rss_missing: str | None = None
    """Why `rss_mb` is None: the gate reports memory as NOT_MEASURED with this reason."""
