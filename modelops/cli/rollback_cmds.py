"""`modelops rollback plan MODEL`: the dry run of a rollback over the dependents graph.

It extends the `rollback` command (registered by lifecycle_cmds) instead of adding a
second one, so `modelops rollback MODEL` keeps its meaning and `modelops rollback plan
MODEL` shows, changing nothing, what the rollback job would do to each dependent: the same
`modelops.rollback.build_plan` the job runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from modelops.cli.cmd_support import open_registry, print_json

__all__ = ["register", "cmd_rollback_plan"]


def cmd_rollback_plan(args: argparse.Namespace) -> int:
    from modelops.rollback import build_plan

    with open_registry(args) as reg:
        plan = build_plan(
            reg,
            args.plan_model,
            slice=args.slice,
            version=args.version,
            cascade=args.cascade,
            approvals=args.approve,
            actor=args.actor,
        )
    if args.json:
        print_json(plan.model_dump(mode="json"))
        return 0
    mode = "cascade" if plan.cascade else "warn (default; --cascade to roll dependents back)"
    print(
        f"rollback plan for {plan.model_id} on slice {plan.slice!r} "
        f"({len(plan.dependents)} dependents; {mode}); dry run, nothing changed"
    )
    print(plan.table())
    if plan.cycle_edges:
        edges = ", ".join(f"{a}->{b}" for a, b in plan.cycle_edges)
        print(f"cycles and shortcuts in the graph (each model planned once): {edges}")
    return 0


def register(sub: Any) -> None:
    """Add `plan MODEL` and its options to the existing `rollback` command."""
    r = sub.choices["rollback"]
    r.add_argument(
        "plan_model",
        nargs="?",
        default=None,
        metavar="PLAN_MODEL",
        help="`rollback plan MODEL`: show the plan over MODEL's dependents, change nothing",
    )
    r.add_argument(
        "--cascade",
        action="store_true",
        help="plan: roll dependents back too (each needs its tier's approvals)",
    )
    r.add_argument(
        "--approve",
        action="append",
        default=[],
        metavar="DEPENDENT=ACTOR",
        help="plan: a registered actor's approval to cascade into DEPENDENT (repeatable)",
    )
    r.add_argument("--json", action="store_true", help="plan: print the plan as JSON")
    rollback = r.get_default("fn")

    def dispatch(args: argparse.Namespace) -> int:
        if args.model == "plan" and args.plan_model is not None:
            return cmd_rollback_plan(args)
        if args.plan_model is not None or args.cascade or args.approve or args.json:
            from modelops.errors import SpecError

            raise SpecError(
                "PLAN_MODEL, --cascade, --approve and --json belong to `modelops rollback plan "
                "MODEL`; a rollback itself cascades only through the rollback job"
            )
        return int(rollback(args))

    r.set_defaults(fn=dispatch)
