"""`modelops rollback plan MODEL`: the dry run of a rollback over the dependents graph.

It extends the `rollback` command (registered by lifecycle_cmds) instead of adding a
second one, so `modelops rollback MODEL` keeps its meaning and `modelops rollback plan
MODEL` shows, changing nothing, what the rollback job would do to each dependent: the same
`modelops.rollback.build_plan` the job runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from modelops.cli.cmd_support import open_registry, print_json
from modelops.errors import SpecError

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
            approvals=[_approval(a) for a in args.approve],
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


def _approval(given: str) -> str:
    """A signed statement's file (from `modelops sign-cascade`); anything else is handed on
    as given, and the registry refuses it as unsigned, naming it."""
    path = Path(given)
    try:
        return path.read_text(encoding="utf-8").strip() if path.is_file() else given
    except OSError as exc:
        raise SpecError(f"cannot read cascade approval {given}: {exc.strerror}") from None


def cmd_sign_cascade(args: argparse.Namespace) -> int:
    from modelops.identity import load_signing_key

    if not args.key:
        raise SpecError("signing needs the signer's private key: --key FILE or MODELOPS_KEY")
    with open_registry(args) as reg:
        stmt = reg.sign_cascade_approval(
            args.root,
            args.dependent,
            load_signing_key(args.key),
            signer=args.actor,
            slice=args.slice,
        )
    data = stmt.to_bytes()
    what = (
        f"signed cascade approval of {stmt.payload.model}@{stmt.payload.version} "
        f"(rollback of {args.root}, slice {args.slice!r})"
    )
    if args.out:
        Path(args.out).write_bytes(data + b"\n")
        print(f"{what} written to {args.out}")
    else:
        print(data.decode("utf-8"))
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
        metavar="FILE",
        help="plan: a signed approval to cascade into a dependent, from `modelops "
        "sign-cascade` (repeatable)",
    )
    r.add_argument("--json", action="store_true", help="plan: print the plan as JSON")
    rollback = r.get_default("fn")

    def dispatch(args: argparse.Namespace) -> int:
        if args.model == "plan" and args.plan_model is not None:
            return cmd_rollback_plan(args)
        if args.plan_model is not None or args.cascade or args.approve or args.json:
            raise SpecError(
                "PLAN_MODEL, --cascade, --approve and --json belong to `modelops rollback plan "
                "MODEL`; a rollback itself cascades only through the rollback job"
            )
        return int(rollback(args))

    r.set_defaults(fn=dispatch)
    sc = sub.add_parser(
        "sign-cascade", help="sign an approval to roll DEPENDENT back with ROOT's rollback"
    )
    sc.add_argument("root")
    sc.add_argument("dependent")
    sc.add_argument("--slice", default="global")
    sc.add_argument("--key", default=os.environ.get("MODELOPS_KEY") or None, metavar="FILE")
    sc.add_argument("--out", default=None, metavar="FILE", help="default: print it")
    sc.add_argument("--actor", required=True, help="the signer (a registered actor)")
    sc.set_defaults(fn=cmd_sign_cascade)
