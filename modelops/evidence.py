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
    "UserSums",
    "WindowReader",
    "WindowStats",
]

TIMEOUT_ERROR = "timeout"  # the error code the gateway records for a backend timeout


class OutcomeStats(BaseModel):
    """Outcomes of one name (e.g. click) joined to a window's predictions by request id."""

    model_config = ConfigDict(extra="forbid")

    count: int
    mean: float  # for a 0/1 click outcome: the click rate among requests with an outcome


class UserSums(BaseModel):
    """Per-user sufficient statistics of a ratio metric sum(x) / sum(y) over one series.

    Per user u: x_u (e.g. the user's clicks) and y_u (the user's requests with that outcome);
    the six sums are what the delta-method variance of the ratio needs, with the user as the
    unit (`modelops.evaluation.ratio.ArmStats` holds the same numbers). Only requests that
    carry a user hash count; `WindowStats.unkeyed_requests` says how many did not.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(default=0, ge=0)
    sum_x: float = 0.0
    sum_y: float = Field(default=0.0, ge=0)
    sum_xx: float = Field(default=0.0, ge=0)
    sum_yy: float = Field(default=0.0, ge=0)
    sum_xy: float = 0.0


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
    users: int = Field(default=0, ge=0, description="distinct user hashes in the series")
    unkeyed_requests: int = Field(
        default=0, ge=0, description="requests without a user hash: in no per-user figure"
    )
    user_requests: UserSums | None = Field(
        default=None,
        description="x = a user's failed requests, y = the user's requests (error ratio)",
    )
    user_outcomes: dict[str, UserSums] = Field(
        default_factory=dict,
        description="per outcome name: x = the user's outcome values, y = the user's requests "
        "with that outcome (clicks per request, per user)",
    )
    segments: dict[str, dict[str, UserSums]] = Field(
        default_factory=dict,
        description="per data slice (segment), user_outcomes over its requests; filled when "
        "the window is read by_segment",
    )


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
        by_segment: bool = False,
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
