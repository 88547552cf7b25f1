"""Routing tables and sticky assignment: the contract between controller and gateways.

The controller turns the registry's desired state into one RouteTable per (model, slice),
naming for each version the backend endpoint where it is loaded. Gateways route only by
these tables, so a gateway never sends traffic to a version the controller has not loaded.
Assignment is a pure function of (layer salt, user id): the same user gets the same arm on
every replica and after every restart, and different layers are independent.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BackendKind",
    "Endpoint",
    "WeightedEndpoint",
    "ShadowRoute",
    "ABRoute",
    "BreakerPolicy",
    "RouteTable",
    "RoutingSnapshot",
    "Assignment",
    "ApplyResult",
    "TableRef",
    "bucket",
    "assign",
    "shadow_sampled",
    "route_key",
    "BUCKETS",
]

BUCKETS = 10_000  # percent * 100: a canary step of 0.01% is expressible


class BackendKind(StrEnum):
    triton = "triton"
    ray = "ray"
    vllm = "vllm"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Endpoint(_M):
    """Where one version is served: a backend base URL and the backend's name for it."""

    version: int
    backend: BackendKind
    url: str  # e.g. http://127.0.0.1:8000
    backend_model: str  # the name the backend knows it by
    feature_contract_ref: str | None = None


class WeightedEndpoint(_M):
    endpoint: Endpoint
    percent: float = Field(ge=0, le=100)


class ShadowRoute(_M):
    endpoint: Endpoint
    percent: float = Field(ge=0, le=100)
    mode: Literal["live", "replay"] = "live"


class ABRoute(_M):
    layer: str
    arms: list[WeightedEndpoint]


class BreakerPolicy(_M):
    """Data-plane guardrail for candidates: trip when the window's failure rate passes it,
    or at once on a run of consecutive failures (a crash: the rate over a long window is
    diluted by the successes from before it)."""

    window_s: float = 10.0
    min_requests: int = 20
    max_error_rate: float = 0.2
    timeout_s: float = 2.0
    consecutive_failures: int = Field(
        default=5, ge=0, description="trip after this many failures in a row; 0 turns it off"
    )


class RouteTable(_M):
    model_id: str
    slice: str
    generation: int
    epoch: int = Field(
        default=0,
        ge=0,
        description="raised by the controller when it replaces a table it did not publish "
        "(a stale state file, another registry, a foreign push): tables order by "
        "(epoch, generation), so the controller's table can always supersede one whose "
        "generation it never issued",
    )
    model_class: str = "dnn"
    prod: Endpoint | None = None
    canary: WeightedEndpoint | None = None
    ab_test: ABRoute | None = None
    shadow: ShadowRoute | None = None
    fallback: Endpoint | None = Field(
        default=None, description="last good version; used on a breaking contract if allowed"
    )
    on_breaking_contract: Literal["fail_closed", "fallback"] = "fail_closed"
    log_inputs: bool = False
    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)

    @property
    def key(self) -> tuple[str, str]:
        return (self.model_id, self.slice)

    @property
    def order(self) -> tuple[int, int]:
        """What "newer" means: a gateway takes a table only if this is larger."""
        return (self.epoch, self.generation)

    def same_route(self, other: RouteTable) -> bool:
        """The same routing, whatever the epoch it was stamped with."""
        return self.model_copy(update={"epoch": 0}) == other.model_copy(update={"epoch": 0})


class RoutingSnapshot(_M):
    """Everything a gateway routes by; pushed by the controller and pulled by generation."""

    tables: list[RouteTable] = Field(default_factory=list)
    expect: dict[str, tuple[int, int] | None] = Field(
        default_factory=dict,
        description="compare-and-set, by route key: a table for that key is applied only if "
        "the gateway still holds the (epoch, generation) the pusher read from it (null: no "
        "table), so a push decided on a stale read never overwrites a newer table",
    )


class TableRef(BaseModel):
    """One table in a push's reply: applied, or ignored and why."""

    model_config = ConfigDict(extra="forbid")

    model_id: str
    slice: str
    generation: int
    epoch: int = 0
    current: int | None = Field(default=None, description="the generation kept, if ignored")
    current_epoch: int | None = Field(default=None, description="the epoch kept, if ignored")
    reason: str | None = Field(default=None, description="why it was ignored")


class ApplyResult(BaseModel):
    """What a push or pull changed: the reply to `PUT /admin/routes`."""

    model_config = ConfigDict(extra="forbid")

    applied: list[TableRef] = Field(default_factory=list)
    ignored: list[TableRef] = Field(default_factory=list)


class Assignment(_M):
    arm: Literal["prod", "canary", "ab", "fallback"]
    endpoint: Endpoint
    bucket: int | None = None


def route_key(model_id: str, slice_: str) -> str:
    return f"{model_id}/{slice_}"


def bucket(salt: str, user_id: str) -> int:
    """A stable bucket in [0, BUCKETS): sha256, so it is the same in every process."""
    digest = hashlib.sha256(f"{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(table: RouteTable, user_id: str | None) -> Assignment | None:
    """Pick the arm for this user. No user id means prod: stickiness needs an identity."""
    if table.ab_test is not None and user_id is not None:
        b = bucket(f"ab:{table.ab_test.layer}", user_id)
        edge = 0.0
        for arm in table.ab_test.arms:
            edge += arm.percent * BUCKETS / 100
            if b < edge:
                is_prod = table.prod is not None and arm.endpoint.version == table.prod.version
                return Assignment(arm="prod" if is_prod else "ab", endpoint=arm.endpoint, bucket=b)
    if table.canary is not None and user_id is not None:
        b = bucket(f"canary:{table.model_id}:{table.slice}", user_id)
        if b < table.canary.percent * BUCKETS / 100:
            return Assignment(arm="canary", endpoint=table.canary.endpoint, bucket=b)
    if table.prod is not None:
        return Assignment(arm="prod", endpoint=table.prod)
    return None


def shadow_sampled(table: RouteTable, request_key: str) -> bool:
    """Whether this request is mirrored; salted apart from the user-facing layers."""
    if table.shadow is None or table.shadow.mode != "live":
        return False
    if table.shadow.percent >= 100:
        return True
    return bucket(f"shadow:{table.model_id}:{table.slice}", request_key) < (
        table.shadow.percent * BUCKETS / 100
    )
