"""`modelops transition`, `rollback`, `approve` and `override`: moving a version on a slice."""

from __future__ import annotations

import argparse
from typing import Any

from modelops.cli.cmd_support import actor_opt, open_registry
from modelops.cli.governance_cmds import signed_by, signing_opts


def _print_result(r: Any) -> None:
    if not r.changed:
        print(f"{r.model_id}@{r.version} [{r.slice}] {r.note}; nothing changed")
        return
    pct = f" at {r.percent}%" if r.percent is not None else ""
    line = f"{r.model_id}@{r.version} [{r.slice}] {r.from_state.value} -> {r.to_state.value}{pct}"
    line += f" (desired generation {r.generation})"
    print(line)
    if r.deprecated_version is not None:
        print(f"  version {r.deprecated_version} -> DEPRECATED (kept warm as rollback target)")
    if r.restored_version is not None:
        print(f"  version {r.restored_version} restored to PROMOTED")
    for c in r.caveats:
        print(f"  caveat: {c}")


def cmd_transition(args: argparse.Namespace) -> int:
    from modelops.cli.cmd_support import artifact_store
    from modelops.rollback import enter_with_snapshots

    with open_registry(args) as reg:
        # Into CANARY or AB_TEST, the state snapshot is taken first (refused if it fails).
        r = enter_with_snapshots(
            reg,
            artifact_store(None),
            args.model,
            args.version,
            args.state,
            actor=args.actor,
            slice=args.slice,
            expected=args.expect,
            expected_percent=args.expect_percent,
            percent=args.percent,
            reason=args.reason or "",
            mode=args.mode,
            layer=args.layer,
        )
    _print_result(r)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        r = reg.rollback(
            args.model,
            actor=args.actor,
            slice=args.slice,
            reason=args.reason or "",
            expected_version=args.version,
            expected=args.expect,
        )
    _print_result(r)
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        a = reg.approve(
            args.model,
            args.version,
            actor=args.actor,
            slice=args.slice,
            target=args.to,
            **signed_by(args),
        )
    print(
        f"{a.approver} ({a.team}) approved {a.model_id}@{a.version} -> {a.target.value} "
        f"on slice {a.slice}"
    )
    return 0


def cmd_override(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        reg.override(
            args.model,
            args.version,
            actor=args.actor,
            reason=args.reason,
            slice=args.slice,
            kind=args.kind,
            **signed_by(args),
        )
    what = {
        "promote_irreversible": "promoting",
        "slo_not_measured": "passing the unmeasured latency/memory SLO of",
    }.get(args.kind, args.kind)
    print(
        f"override recorded: {args.actor} takes responsibility for {what} "
        f"{args.model}@{args.version} on slice {args.slice}: {args.reason}"
    )
    return 0


def register(sub: Any) -> None:
    t = sub.add_parser("transition", help="move a version on a slice")
    t.add_argument("model")
    t.add_argument("version", type=int)
    t.add_argument("state")
    t.add_argument("--slice", default="global")
    t.add_argument("--percent", type=int, default=None)
    t.add_argument(
        "--expect",
        default=None,
        metavar="STATE",
        help="compare-and-set: refuse unless the version is in this state",
    )
    t.add_argument(
        "--expect-percent",
        type=int,
        default=None,
        metavar="P",
        help="compare-and-set on the current percent too (a canary step from a stale read "
        "is refused)",
    )
    t.add_argument("--mode", default=None, choices=["live", "replay"], help="SHADOW mode")
    t.add_argument("--layer", default=None, help="AB_TEST experiment layer")
    actor_opt(t, required=True)
    t.add_argument("--reason", default=None)
    t.set_defaults(fn=cmd_transition)

    r = sub.add_parser(
        "rollback",
        help="roll back a version on a slice (bare: undo the latest serving change, once)",
    )
    r.add_argument("model")
    r.add_argument("--slice", default="global")
    r.add_argument(
        "--version",
        type=int,
        default=None,
        metavar="N",
        help="the version to roll back; already rolled back is an idempotent answer",
    )
    r.add_argument(
        "--expect",
        default=None,
        metavar="STATE",
        help="compare-and-set: refuse unless the version is in this state",
    )
    actor_opt(r, required=True)
    r.add_argument("--reason", default=None)
    r.set_defaults(fn=cmd_rollback)

    a = sub.add_parser("approve", help="approve the next gated move of a version")
    a.add_argument("model")
    a.add_argument("version", type=int)
    a.add_argument("--slice", default="global")
    a.add_argument("--to", default=None, metavar="STATE")
    actor_opt(a, required=True)
    signing_opts(a)
    a.set_defaults(fn=cmd_approve)

    o = sub.add_parser(
        "override",
        help="take responsibility for promoting an IRREVERSIBLE model, or for an L2/L3 "
        "version whose latency/memory SLO could not be measured",
    )
    o.add_argument("model")
    o.add_argument("version", type=int)
    o.add_argument("--slice", default="global")
    o.add_argument("--reason", required=True)
    o.add_argument(
        "--kind",
        default="promote_irreversible",
        metavar="KIND",
        help="promote_irreversible (default) or slo_not_measured",
    )
    actor_opt(o, required=True)
    signing_opts(o)
    o.set_defaults(fn=cmd_override)
