"""The lifecycle state machine and tier rules, as pure functions.

Kept free of storage so that the rules can be read in one place and tested in
microseconds; the registry calls `check_transition` inside its serialized transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from modelops.errors import ApprovalRequired, IllegalTransition, SpecError
from modelops.spec import State, Tier

__all__ = [
    "BASE_EDGES",
    "FORWARD",
    "TRAFFIC_STATES",
    "ROLLBACK_SOURCES",
    "SliceContext",
    "TransitionCheck",
    "legal_next",
    "check_transition",
    "approvals_needed",
    "RecordedApproval",
    "counted_approvals",
    "approval_target",
    "CANARY_RANGE",
    "SHADOW_RANGE",
    "AB_RANGE",
]

S = State

# The edges every tier has. Skips are added per tier in `legal_next`.
BASE_EDGES: dict[State, frozenset[State]] = {
    S.REGISTERED: frozenset({S.OFFLINE_PASSED, S.FAILED, S.ARCHIVED}),
    S.OFFLINE_PASSED: frozenset({S.APPROVED_SHADOW, S.ARCHIVED}),
    S.FAILED: frozenset({S.ARCHIVED}),
    S.APPROVED_SHADOW: frozenset({S.SHADOW, S.ROLLED_BACK}),
    S.SHADOW: frozenset({S.APPROVED_CANARY, S.FAILED, S.ROLLED_BACK}),  # FAILED: divergence
    S.APPROVED_CANARY: frozenset({S.CANARY, S.ROLLED_BACK}),
    S.CANARY: frozenset({S.CANARY, S.AB_TEST, S.ROLLED_BACK}),
    S.AB_TEST: frozenset({S.PROMOTED, S.ROLLED_BACK}),
    S.PROMOTED: frozenset({S.ROLLED_BACK, S.DEPRECATED}),
    S.DEPRECATED: frozenset({S.ARCHIVED}),
    S.ROLLED_BACK: frozenset({S.ARCHIVED}),
    S.ARCHIVED: frozenset(),
}

# The canonical forward ladder, used to pick the default target of an approval.
FORWARD: dict[State, State] = {
    S.REGISTERED: S.OFFLINE_PASSED,
    S.OFFLINE_PASSED: S.APPROVED_SHADOW,
    S.APPROVED_SHADOW: S.SHADOW,
    S.SHADOW: S.APPROVED_CANARY,
    S.APPROVED_CANARY: S.CANARY,
    S.CANARY: S.AB_TEST,
    S.AB_TEST: S.PROMOTED,
}

# States whose versions take (or mirror) live traffic, and so change the desired state.
TRAFFIC_STATES = frozenset({S.SHADOW, S.CANARY, S.AB_TEST, S.PROMOTED})
# States that may only exist when the slice has a prod version to compare against.
NEEDS_PROD = frozenset({S.SHADOW, S.CANARY, S.AB_TEST})
# At most one version per (model, slice) in each of these.
SINGLETON_STATES = frozenset({S.SHADOW, S.CANARY, S.AB_TEST, S.PROMOTED})
# Every forward state can be rolled back from; this is the set of rollback edges.
ROLLBACK_SOURCES = frozenset(
    {S.APPROVED_SHADOW, S.SHADOW, S.APPROVED_CANARY, S.CANARY, S.AB_TEST, S.PROMOTED}
)

CANARY_RANGE = (1, 10)
SHADOW_RANGE = (1, 100)
AB_RANGE = (1, 99)


@dataclass(frozen=True)
class SliceContext:
    """What the rules need to know about a (model, slice) beyond the version's own state."""

    tier: Tier
    has_prod: bool = False
    ever_had_prod: bool = False
    is_weight_refresh: bool = False
    irreversible: bool = False  # the model's rollback class is IRREVERSIBLE
    occupied: dict[State, int] = field(default_factory=dict)  # singleton state -> version


@dataclass(frozen=True)
class TransitionCheck:
    """What one legal transition needs: its approvals, and the tier rule behind a skip."""

    target: State
    approvals: int  # distinct human approvals needed (0 = none)
    cross_team: bool  # at least one approver must be outside the owning team
    automated_allowed: bool
    skip: str | None = None  # the tier rule that allowed a skip, for the audit payload


def legal_next(current: State, ctx: SliceContext) -> list[State]:
    """Every state reachable in one step under this tier, in ladder order."""
    nxt = set(BASE_EDGES[current])
    tier = ctx.tier
    if tier is Tier.L0 and current in (S.OFFLINE_PASSED, S.SHADOW, S.CANARY):
        nxt.add(S.PROMOTED)
    if tier is Tier.L1 and current is S.CANARY:
        nxt.add(S.PROMOTED)
    if tier is Tier.L2 and current is S.CANARY and ctx.is_weight_refresh:
        nxt.add(S.PROMOTED)
    # Bootstrap: a slice that never had a prod version has nothing to shadow or canary
    # against, so its first version is promoted straight from OFFLINE_PASSED.
    if current is S.OFFLINE_PASSED and not ctx.ever_had_prod:
        nxt.add(S.PROMOTED)
    order = list(State)
    return sorted(nxt, key=order.index)


def approvals_needed(current: State, target: State, ctx: SliceContext) -> tuple[int, bool]:
    """(number of distinct approvers, whether one must be from another team)."""
    if target is S.ROLLED_BACK:
        return 0, False  # a gate on the way back turns an incident into an outage
    if current is S.REGISTERED and target in (S.OFFLINE_PASSED, S.FAILED):
        return 0, False  # gate results are evidence written by the gates themselves
    if current is S.SHADOW and target is S.FAILED:
        return 0, False  # the shadow divergence verdict: a way out, never gated
    if ctx.tier is Tier.L3:
        return 2, True
    if ctx.tier is Tier.L2 and target in (S.APPROVED_CANARY, S.PROMOTED):
        # A weight refresh on an unchanged contract is the boring, automated deploy; the
        # human gate is for contract changes and for models that cannot be rolled back.
        return (0, False) if ctx.is_weight_refresh and not ctx.irreversible else (1, False)
    return 0, False


def _check_percent(target: State, percent: int | None) -> None:
    ranges = {S.CANARY: CANARY_RANGE, S.SHADOW: SHADOW_RANGE, S.AB_TEST: AB_RANGE}
    if target not in ranges:
        if percent is not None:
            raise SpecError(
                f"--percent applies only to CANARY, SHADOW and AB_TEST, not {target.value}"
            )
        return
    lo, hi = ranges[target]
    if percent is not None and not lo <= percent <= hi:
        raise SpecError(f"{target.value} percent {percent} is out of range; allowed {lo}..{hi}")


def check_transition(
    model_version: str,
    slice_: str,
    current: State,
    target: State,
    ctx: SliceContext,
    *,
    percent: int | None = None,
    current_percent: int | None = None,
    automated: bool = False,
) -> TransitionCheck:
    """Raise IllegalTransition (naming the legal next states) or return what it needs."""
    _check_percent(target, percent)
    legal = legal_next(current, ctx)
    where = f"{model_version} on slice {slice_!r}"
    if target not in legal:
        allowed = ", ".join(s.value for s in legal) or "none (terminal state)"
        hint = ""
        if target is S.PROMOTED and current is S.CANARY and ctx.tier is Tier.L2:
            hint = " (L2 skips AB_TEST only for a weight refresh on an unchanged contract)"
        raise IllegalTransition(
            f"{where}: {current.value} -> {target.value} is not allowed at tier "
            f"{ctx.tier.value}{hint}; legal next states: {allowed}"
        )
    if target is S.CANARY and current is S.CANARY:
        if percent is None or percent == current_percent:
            raise IllegalTransition(
                f"{where}: a canary step must change the percent (now {current_percent}); "
                f"allowed {CANARY_RANGE[0]}..{CANARY_RANGE[1]}"
            )
    if target in NEEDS_PROD and not ctx.has_prod:
        raise IllegalTransition(
            f"{where}: cannot enter {target.value}: the slice has no PROMOTED version to "
            "compare against; the first version goes OFFLINE_PASSED -> PROMOTED"
        )
    holder = ctx.occupied.get(target)
    if target in (S.SHADOW, S.CANARY, S.AB_TEST) and holder is not None and current != target:
        raise IllegalTransition(
            f"{where}: version {holder} is already in {target.value} on this slice; "
            "roll it back or finish it first"
        )
    if target in (S.CANARY, S.AB_TEST) and current not in (S.CANARY, S.AB_TEST):
        other = S.AB_TEST if target is S.CANARY else S.CANARY
        if ctx.occupied.get(other) is not None:
            raise IllegalTransition(
                f"{where}: version {ctx.occupied[other]} is in {other.value} on this slice; "
                "only one candidate takes live traffic at a time"
            )
    n, cross = approvals_needed(current, target, ctx)
    # At L3 an automated actor may only take a version out: roll it back, or fail a shadow.
    automated_ok = (
        ctx.tier is not Tier.L3
        or target is S.ROLLED_BACK
        or (current is S.SHADOW and target is S.FAILED)
    )
    if automated and not automated_ok:
        raise IllegalTransition(
            f"{where}: tier L3 allows no automatic transition to {target.value}; "
            "a human actor with two approvals must make it"
        )
    skip = None
    if target is S.PROMOTED and current is not S.AB_TEST:
        skip = {
            S.OFFLINE_PASSED: "first version on the slice"
            if not ctx.ever_had_prod
            else "L0 skips to PROMOTED",
            S.SHADOW: "L0 skips to PROMOTED",
            S.CANARY: {
                Tier.L0: "L0 skips to PROMOTED",
                Tier.L1: "L1 skips AB_TEST",
                Tier.L2: "L2 weight refresh on an unchanged contract skips AB_TEST",
            }.get(ctx.tier),
        }.get(current)
    return TransitionCheck(
        target=target, approvals=n, cross_team=cross, automated_allowed=automated_ok, skip=skip
    )


# ----------------------------------------------------------------------------- approvals


@dataclass(frozen=True)
class RecordedApproval:
    """One approval the registry holds for the move being made, at the version's epoch."""

    approver: str
    team: str


def _key(text: str) -> str:
    return text.strip().lower()


def counted_approvals(
    model_id: str,
    version: int,
    slice_: str,
    target: State,
    *,
    tier: Tier,
    owner_team: str,
    actor: str,
    recorded: Sequence[RecordedApproval],
    known_teams: Collection[str],
    needed: int,
    cross_team: bool,
) -> list[RecordedApproval]:
    """The approvals that count for `actor`'s move, or ApprovalRequired naming the rule.

    The acting actor's own approval never counts. Rows are compared in their one spelling,
    and a team outside the known set (a row left by a registry that did not validate teams)
    is no team, never "another team".
    """
    own = any(_key(r.approver) == actor for r in recorded)
    valid = [r for r in recorded if _key(r.approver) != actor]
    outside = [r for r in valid if _key(r.team) in known_teams and _key(r.team) != owner_team]
    if len(valid) >= needed and (not cross_team or outside):
        return valid
    rule = f"{needed} approval{'s' if needed > 1 else ''} from distinct actors"
    if cross_team:
        rule += f", at least one outside team {owner_team!r}"
    have = ", ".join(f"{r.approver} ({r.team})" for r in valid) or "none"
    note = f"; {actor}'s own approval does not count" if own else ""
    raise ApprovalRequired(
        f"{model_id}@{version} -> {target.value} on slice {slice_!r} at tier "
        f"{tier.value} needs {rule}; have: {have}{note}; "
        f"run `modelops approve {model_id} {version} --slice {slice_} --to {target.value} "
        "--actor NAME`"
    )


def approval_target(
    model_version: str, slice_: str, current: State, requested: State | None, ctx: SliceContext
) -> State:
    """Which move an approval given now is for: the one named, or the only gated next move
    (the forward one when several are gated). Rollbacks and archiving are never gated."""
    legal = legal_next(current, ctx)
    if requested is None:
        gated = [
            s
            for s in legal
            if approvals_needed(current, s, ctx)[0] and s not in (S.ARCHIVED, S.ROLLED_BACK)
        ]
        if len(gated) == 1:
            return gated[0]
        if FORWARD.get(current) in gated:
            return FORWARD[current]
        opts = ", ".join(s.value for s in gated) or "none"
        raise IllegalTransition(
            f"{model_version} on slice {slice_!r} is {current.value}; no single "
            f"next move needs approval at tier {ctx.tier.value} (gated: {opts}); "
            "name one with --to STATE"
        )
    if requested not in legal:
        allowed = ", ".join(s.value for s in legal)
        raise IllegalTransition(
            f"{model_version} on slice {slice_!r}: {current.value} -> "
            f"{requested.value} is not allowed; legal next states: {allowed}"
        )
    if not approvals_needed(current, requested, ctx)[0]:
        raise IllegalTransition(
            f"{current.value} -> {requested.value} needs no approval at tier {ctx.tier.value}"
        )
    return requested
