"""The one decision interface between the evidence a sensor gathers and the step it launches.

A sensor builds `Evidence` (what a live version did over its window, beside prod over the
same period, with the policies that apply) and asks a `DecisionEngine` for a `Decision`.
The engine is pure: no registry, no log, no clock, so it is tested on constructed windows
and a statistical engine (sequential tests, SRM, shadow divergence) can replace
`GuardrailRule` (`modelops.evaluation.guardrail`) without touching the sensor.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from modelops.actions import ActionKind
from modelops.evidence import WindowStats
from modelops.fleet import CANARY_LADDER, OnlinePolicy, PolicyDurations
from modelops.spec import DecisionPolicy, State, Tier

__all__ = [
    "CANDIDATE_ARMS",
    "PROD_ARM",
    "Decision",
    "DecisionEngine",
    "Evidence",
    "Verdict",
    "automated_path",
]

PROD_ARM = "prod"
# The arm the gateway logs a live version's traffic under, per state. A shadow mirror is
# logged under arm "shadow" with the user's request id, so outcomes joined to it are the
# outcomes of what prod served: they say nothing about the shadow version.
CANDIDATE_ARMS: dict[State, str] = {
    State.SHADOW: "shadow",
    State.CANARY: "canary",
    State.AB_TEST: "ab",
    State.PROMOTED: PROD_ARM,
}


class Verdict(StrEnum):
    ADVANCE = "ADVANCE"
    PROMOTE = "PROMOTE"
    HOLD = "HOLD"
    ROLLBACK = "ROLLBACK"


class Evidence(BaseModel):
    """Everything a decision may depend on, for one live version on one slice."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    slice: str
    version: int
    state: State
    percent: int | None = None
    since_ts: float = Field(description="unix seconds the version entered its current state")
    now_ts: float
    candidate: WindowStats | None = Field(
        default=None, description="the version's own arm since since_ts (None: no traffic yet)"
    )
    baseline: WindowStats | None = Field(
        default=None,
        description="prod over the same period (for PROMOTED: the previous prod before since)",
    )
    policy: DecisionPolicy
    online: OnlinePolicy = Field(default_factory=OnlinePolicy)
    durations: PolicyDurations = Field(default_factory=PolicyDurations)
    canary_ladder: list[int] = Field(default_factory=lambda: list(CANARY_LADDER), min_length=1)
    tier: Tier
    is_weight_refresh: bool = Field(
        default=False, description="same feature contract as the current prod version"
    )
    irreversible: bool = Field(default=False, description="rollback class IRREVERSIBLE")
    window_start_ts: float | None = Field(
        default=None,
        description="where candidate and baseline windows start when not at since_ts (a "
        "canary's windows cover every step since it began; since_ts is the current step's)",
    )
    step_users: tuple[int, int] | None = Field(
        default=None,
        description="users on (candidate, prod) since the current step began: the SRM check "
        "against the step's percent",
    )
    ab_plan: dict[str, Any] | None = Field(
        default=None, description="the plan the registry recorded on entry to AB_TEST"
    )

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.now_ts - self.since_ts)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    reason: str
    next_percent: int | None = None
    next_action: ActionKind | None = None
    details: dict[str, Any] = Field(
        default_factory=dict,
        description="what the reason rests on (lift, interval, users, why waiting), flat "
        "scalars the sensor puts on the run and in its log",
    )
    alert: str | None = Field(
        default=None,
        description="an alert kind the owners must hear about (srm, ab_guardrail, "
        "ab_no_effect, canary_inconclusive); the sensor records it once in the audit log",
    )
    conclusion: dict[str, Any] | None = Field(
        default=None,
        description="an A/B test's end (outcome, concluded_with_power) for the registry",
    )


@runtime_checkable
class DecisionEngine(Protocol):
    """What the online-metrics sensor asks; a statistical engine implements the same call."""

    def decide(self, evidence: Evidence) -> Decision: ...


def automated_path(tier: Tier, *, is_weight_refresh: bool, irreversible: bool) -> bool:
    """Whether the gated steps (to canary, to prod) need no human, as the registry rules it.

    L0/L1 always; L2 only for a weight refresh on an unchanged contract of a model that can
    be rolled back; L3 never.
    """
    if tier in (Tier.L0, Tier.L1):
        return True
    if tier is Tier.L2:
        return is_weight_refresh and not irreversible
    return False
