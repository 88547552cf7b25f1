"""Desired deployment state of one (model, slice): what the controller must make true.

It is derived from the per-slice states inside the transaction that changes them, so the
registry and the desired state can never disagree; the generation lets a controller tell a
new desire from one it has already reconciled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelops.spec import ShadowMode, State

__all__ = [
    "Arm",
    "CanaryTarget",
    "ShadowTarget",
    "ABTest",
    "DesiredState",
    "SliceRow",
    "derive",
    "last_good",
]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arm(_M):
    version: int
    percent: int


class CanaryTarget(_M):
    version: int
    percent: int


class ShadowTarget(_M):
    version: int
    percent: int
    mode: ShadowMode


class ABTest(_M):
    layer: str
    arms: list[Arm]


class DesiredState(_M):
    model_id: str
    slice: str
    generation: int
    prod_version: int | None = None
    canary: CanaryTarget | None = None
    shadow: ShadowTarget | None = None
    ab_test: ABTest | None = None
    rollback_target: int | None = Field(
        default=None, description="the last good version, kept warm so rollback needs no load"
    )
    warm_versions: list[int] = Field(default_factory=list)

    def content(self) -> dict[str, Any]:
        """Everything but the generation, to decide whether a change is a new desire."""
        return self.model_dump(mode="json", exclude={"generation"})


@dataclass(frozen=True)
class SliceRow:
    version: int
    state: State
    percent: int | None
    params: dict[str, Any]


def last_good(rows: list[SliceRow]) -> int | None:
    """The most recently deprecated version: what a rollback of prod restores."""
    deprecated = [r for r in rows if r.state is State.DEPRECATED]
    if not deprecated:
        return None
    return max(deprecated, key=lambda r: (r.params.get("deprecated_at_gen", 0), r.version)).version


def derive(model_id: str, slice_: str, generation: int, rows: list[SliceRow]) -> DesiredState:
    prod = next((r for r in rows if r.state is State.PROMOTED), None)
    canary = next((r for r in rows if r.state is State.CANARY), None)
    shadow = next((r for r in rows if r.state is State.SHADOW), None)
    ab = next((r for r in rows if r.state is State.AB_TEST), None)
    rollback_target = last_good(rows)
    ab_test = None
    if ab is not None and prod is not None:
        cand = ab.percent or 50
        ab_test = ABTest(
            layer=str(ab.params.get("layer") or f"{model_id}.{slice_}"),
            arms=[
                Arm(version=prod.version, percent=100 - cand),
                Arm(version=ab.version, percent=cand),
            ],
        )
    warm = {r.version for r in (prod, canary, shadow, ab) if r is not None}
    if rollback_target is not None:
        warm.add(rollback_target)
    return DesiredState(
        model_id=model_id,
        slice=slice_,
        generation=generation,
        prod_version=prod.version if prod else None,
        canary=CanaryTarget(version=canary.version, percent=canary.percent or 1)
        if canary
        else None,
        shadow=ShadowTarget(
            version=shadow.version,
            percent=shadow.percent or 100,
            mode=ShadowMode(shadow.params.get("mode", ShadowMode.live.value)),
        )
        if shadow
        else None,
        ab_test=ab_test,
        rollback_target=rollback_target,
        warm_versions=sorted(warm),
    )
