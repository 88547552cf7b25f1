"""Rollback plans over the dependents graph: who is downstream, and what happens to each.

Pure: the registry hands over the graph (`DependentsGraph`), this module walks it. The dry
run (`modelops rollback plan`) and the rollback job call the same `plan_rollback`, so what
the plan shows is what the job does.

Per dependent, in the transitive closure of the rolled-back model:
- `needs_retrain`: the dependent reads a feature this model's outputs feed (its feature
  contract names one of the model's `feeds_features`), so it was trained on those outputs.
  It is marked NEEDS_RETRAIN and never rolled back: its weights are not wrong, its inputs
  moved.
- `restore_state`: a STATE_SNAPSHOT dependent whose stores were snapshotted with the
  rolled-back version's entry (for example a retrieval index built from its outputs); its
  state goes back to that pre-promotion snapshot.
- `cascade`: only with `cascade=True`, and only with the approvals the dependent's tier
  demands (`CASCADE_APPROVALS`); its serving version on the slice is rolled back too.
- `warn`: the default. The owners are told; nothing changes.

The walk is breadth first with a visited set, so cycles terminate, and each dependent
appears once at its shortest distance.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from modelops.errors import ApprovalRequired, NotFoundError
from modelops.spec import RollbackClass, Tier

__all__ = [
    "CASCADE_APPROVALS",
    "PlanAction",
    "GraphNode",
    "DependentsGraph",
    "CascadeApproval",
    "PlannedDependent",
    "RollbackPlan",
    "plan_rollback",
]

PlanAction = Literal["warn", "cascade", "needs_retrain", "restore_state"]

# (distinct approvers, one of them outside the dependent's owning team): the tier's demand
# for a forward move, which rolling back someone else's model is.
CASCADE_APPROVALS: dict[Tier, tuple[int, bool]] = {
    Tier.L0: (0, False),
    Tier.L1: (0, False),
    Tier.L2: (1, False),
    Tier.L3: (2, True),
}


class _Rec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GraphNode(_Rec):
    model_id: str
    tier: Tier
    rollback_class: RollbackClass
    owner_team: str
    feeds_features: list[str] = Field(default_factory=list)
    reads_features: list[str] = Field(default_factory=list)
    slices: list[str] = Field(default_factory=list)


class DependentsGraph(_Rec):
    """Every model and the `downstream_dependents` edges (upstream -> downstream)."""

    nodes: dict[str, GraphNode]
    edges: dict[str, list[str]] = Field(default_factory=dict)
    # (owner_model) of state snapshotted with the rolled-back version's entry
    snapshotted: list[str] = Field(default_factory=list)


class CascadeApproval(_Rec):
    """A verified signed approval to cascade into one dependent (`modelops sign-cascade`)."""

    dependent: str
    approver: str
    team: str


class PlannedDependent(_Rec):
    model_id: str
    depth: int
    via: str
    relation: Literal["consumes", "trained_on_outputs"]
    tier: Tier
    rollback_class: RollbackClass
    action: PlanAction
    approvals_needed: int = 0
    approvers: list[str] = Field(default_factory=list)
    note: str = ""


class RollbackPlan(_Rec):
    model_id: str
    slice: str
    cascade: bool
    dependents: list[PlannedDependent]
    cycle_edges: list[tuple[str, str]] = Field(
        default_factory=list, description="edges that led back into the visited set"
    )

    def by_action(self, action: PlanAction) -> list[PlannedDependent]:
        return [d for d in self.dependents if d.action == action]

    def table(self) -> str:
        """Fixed-width rows for the CLI and the report."""
        if not self.dependents:
            return f"{self.model_id}: no downstream dependents"
        head = f"{'dependent':<28} {'depth':>5} {'tier':<4} {'class':<14} {'action':<13} note"
        rows = [
            f"{d.model_id:<28} {d.depth:>5} {d.tier.value:<4} {d.rollback_class.value:<14} "
            f"{d.action:<13} {d.note}"
            for d in self.dependents
        ]
        return "\n".join([head, *rows])


def _cascade_check(
    node: GraphNode,
    slice_: str,
    given: Sequence[CascadeApproval],
    actor: str,
    known_teams: Collection[str],
) -> tuple[int, list[str], str | None]:
    """(needed, counted approvers, what is missing or None)."""
    needed, cross = CASCADE_APPROVALS[node.tier]
    valid = {a.approver: a for a in given if a.dependent == node.model_id and a.approver != actor}
    outside = [a for a in valid.values() if a.team in known_teams and a.team != node.owner_team]
    if len(valid) >= needed and (not cross or outside or needed == 0):
        return needed, sorted(valid), None
    rule = f"{needed} approval{'s' if needed != 1 else ''} from distinct actors other than {actor}"
    if cross:
        rule += f", one outside team {node.owner_team!r}"
    have = ", ".join(sorted(valid)) or "none"
    return (
        needed,
        sorted(valid),
        (f"{node.model_id} (tier {node.tier.value}) needs {rule}; have: {have}"),
    )


def plan_rollback(
    model_id: str,
    graph: DependentsGraph,
    *,
    slice: str = "global",  # noqa: A002 - the domain's word
    cascade: bool = False,
    approvals: Sequence[CascadeApproval] = (),
    actor: str = "",
    known_teams: Collection[str] = (),
    max_depth: int | None = None,
    serving: Collection[str] | None = None,
) -> RollbackPlan:
    """The plan for rolling back `model_id` on `slice`; refuses a cascade it cannot approve.

    With `cascade`, every dependent that would otherwise only be warned must carry its
    tier's approvals, or the whole plan is refused (ApprovalRequired, one line naming each
    dependent and what it lacks), so a rollback never cascades halfway. `serving` (when
    given) names the models with a live version on the slice: a dependent with none has
    nothing to roll back, so it needs no approval (there is no version one could sign for).
    """
    root = graph.nodes.get(model_id)
    if root is None:
        raise NotFoundError(f"unknown model {model_id!r}; the dependents graph does not have it")
    fed = set(root.feeds_features)
    snapshotted = set(graph.snapshotted)
    depth_of = {model_id: 0}
    queue: deque[tuple[str, int]] = deque([(model_id, 0)])
    out: list[PlannedDependent] = []
    cycles: list[tuple[str, str]] = []
    missing: list[str] = []
    while queue:
        up, depth = queue.popleft()
        if max_depth is not None and depth >= max_depth:
            continue
        for down in graph.edges.get(up, ()):
            if down in depth_of:
                if depth_of[down] <= depth:  # back to an ancestor or across: not forward
                    cycles.append((up, down))
                continue
            depth_of[down] = depth + 1
            queue.append((down, depth + 1))
            node = graph.nodes.get(down)
            if node is None:  # declared but never created: nothing to act on, say so
                continue
            reads = fed.intersection(node.reads_features) if fed else ()
            action: PlanAction = "warn"
            needed, who = 0, []
            if reads:
                action = "needs_retrain"
                note = f"reads {', '.join(sorted(reads))}; marked NEEDS_RETRAIN, not rolled back"
            elif down in snapshotted:
                action = "restore_state"
                note = "state restored to the snapshot taken on the version's entry"
            elif cascade and serving is not None and down not in serving:
                note = f"nothing serving on slice {slice!r}: nothing to cascade"
            elif cascade:
                needed, who, lack = _cascade_check(node, slice, approvals, actor, known_teams)
                action = "cascade"
                note = f"rolled back on slice {slice!r}" + (
                    f" (approved by {', '.join(who)})" if who else ""
                )
                if lack:
                    missing.append(lack)
            else:
                note = "owners warned; rerun with --cascade to roll it back too"
            # Built from validated parts (the graph's nodes): no second validation per row.
            out.append(
                PlannedDependent.model_construct(
                    model_id=down,
                    depth=depth + 1,
                    via=up,
                    relation="trained_on_outputs" if reads else "consumes",
                    tier=node.tier,
                    rollback_class=node.rollback_class,
                    action=action,
                    approvals_needed=needed,
                    approvers=who,
                    note=note,
                )
            )
    if missing:
        raise ApprovalRequired(
            f"cascade from {model_id} refused, nothing was rolled back: "
            + "; ".join(missing)
            + "; give signed approvals (`modelops sign-cascade ROOT DEPENDENT`, then --approve "
            "FILE), or plan without --cascade"
        )
    out.sort(key=lambda d: (d.depth, d.model_id))
    return RollbackPlan(
        model_id=model_id, slice=slice, cascade=cascade, dependents=out, cycle_edges=cycles
    )
