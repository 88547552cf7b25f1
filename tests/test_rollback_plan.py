"""The rollback plan over the dependents graph: pure, so built graphs, no database."""

from __future__ import annotations

import random

import pytest

from modelops.errors import ApprovalRequired, NotFoundError
from modelops.rollback.plan import (
    CascadeApproval,
    DependentsGraph,
    GraphNode,
    plan_rollback,
)
from modelops.spec import RollbackClass, Tier


def node(m: str, tier: str = "L1", rc: str = "STATELESS", **kw: object) -> GraphNode:
    return GraphNode(
        model_id=m, tier=Tier(tier), rollback_class=RollbackClass(rc), owner_team="t-" + m, **kw
    )


def graph(edges: dict[str, list[str]], **nodes: GraphNode) -> DependentsGraph:
    names = set(edges) | {d for ds in edges.values() for d in ds}
    all_nodes = {m: nodes.get(m, node(m)) for m in names}
    return DependentsGraph(nodes=all_nodes, edges=edges)


def test_closure_depths_and_a_cycle_terminates() -> None:
    g = graph({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": ["a", "e"]})
    plan = plan_rollback("a", g)
    assert [(d.model_id, d.depth, d.via) for d in plan.dependents] == [
        ("b", 1, "a"),
        ("c", 1, "a"),
        ("d", 2, "b"),
        ("e", 3, "d"),
    ]
    assert ("d", "a") in plan.cycle_edges
    assert {d.action for d in plan.dependents} == {"warn"}


def test_actions_by_relation() -> None:
    g = graph(
        {"up": ["reader", "index", "viewer"]},
        up=node("up", rc="IRREVERSIBLE", feeds_features=["emb"]),
        reader=node("reader", reads_features=["emb", "x"]),
        index=node("index", rc="STATE_SNAPSHOT"),
    )
    g.snapshotted = ["index"]
    plan = plan_rollback("up", g)
    got = {d.model_id: (d.action, d.relation) for d in plan.dependents}
    assert got == {
        "reader": ("needs_retrain", "trained_on_outputs"),
        "index": ("restore_state", "consumes"),
        "viewer": ("warn", "consumes"),
    }


def test_cascade_needs_each_tiers_approvals() -> None:
    g = graph(
        {"up": ["l1", "l2", "l3"]},
        l1=node("l1", "L1"),
        l2=node("l2", "L2"),
        l3=node("l3", "L3"),
    )
    with pytest.raises(ApprovalRequired) as info:
        plan_rollback("up", g, cascade=True, actor="ops")
    msg = str(info.value)
    assert "\n" not in msg and "l2 (tier L2) needs 1 approval" in msg and "l3 (tier L3)" in msg
    assert "l1" not in msg.split("refused")[1].split(";")[0]  # L1 needs none
    # The acting actor cannot approve, and L3 needs someone outside its team.
    same_team = [
        CascadeApproval(dependent="l2", approver="ops", team="x"),
        CascadeApproval(dependent="l3", approver="a", team="t-l3"),
        CascadeApproval(dependent="l3", approver="b", team="t-l3"),
    ]
    with pytest.raises(ApprovalRequired, match="l2 .* have: none; l3 .* outside team 't-l3'"):
        plan_rollback(
            "up",
            g,
            cascade=True,
            actor="ops",
            approvals=same_team,
            known_teams={"x", "t-l3", "other"},
        )
    ok = [
        CascadeApproval(dependent="l2", approver="a", team="x"),
        CascadeApproval(dependent="l3", approver="a", team="t-l3"),
        CascadeApproval(dependent="l3", approver="c", team="other"),
    ]
    plan = plan_rollback(
        "up", g, cascade=True, actor="ops", approvals=ok, known_teams={"x", "t-l3", "other"}
    )
    assert {d.model_id: (d.action, d.approvals_needed) for d in plan.dependents} == {
        "l1": ("cascade", 0),
        "l2": ("cascade", 1),
        "l3": ("cascade", 2),
    }


def test_unknown_model_and_undeclared_dependents() -> None:
    with pytest.raises(NotFoundError):
        plan_rollback("nope", graph({"a": ["b"]}))
    g = graph({"a": ["b"]})
    g.edges["b"] = ["ghost"]  # declared but never created: walked past, not planned
    assert [d.model_id for d in plan_rollback("a", g).dependents] == ["b"]


def test_a_500_model_dag_is_planned_completely() -> None:
    rng = random.Random(5)
    names = [f"m{i:03d}" for i in range(500)]
    edges = {
        n: sorted({names[j] for j in rng.sample(range(i + 1, 500), min(3, 499 - i))})
        for i, n in enumerate(names[:-1])
    }
    g = graph(edges)
    plan = plan_rollback("m000", g)
    # Closure by brute force: every node reachable from m000.
    seen, stack = set(), ["m000"]
    while stack:
        for d in edges.get(stack.pop(), []):
            if d not in seen:
                seen.add(d)
                stack.append(d)
    assert {d.model_id for d in plan.dependents} == seen
