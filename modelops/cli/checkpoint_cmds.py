"""`modelops checkpoint list|rollback|retain MODEL`: a continuous learner's checkpoints.

Rolling back a learner means serving an older checkpoint, named by time ("the checkpoint
at T"), not by version number, because that is what an incident timeline gives.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from modelops.cli.cmd_support import actor_opt, open_registry, print_json
from modelops.errors import SpecError

__all__ = ["register", "parse_time"]


def parse_time(text: str) -> datetime:
    """ISO 8601 with a timezone (2026-01-01T06:00:00Z); a naive time is ambiguous."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SpecError(
            f"--at {text!r} is not a time; allowed: ISO 8601 with a timezone, e.g. "
            "2026-01-01T06:00:00Z"
        ) from None
    if at.tzinfo is None:
        raise SpecError(f"--at {text!r} has no timezone; allowed e.g. 2026-01-01T06:00:00Z")
    return at


def cmd_list(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        cps = reg.checkpoints(args.model, slice=args.slice)
    if args.json:
        print_json([c.model_dump(mode="json") for c in cps])
        return 0
    print(f"{'VERSION':>7}  {'CHECKPOINT_AT':<32}  {'STATE':<14}  PROMOTED  SHA256")
    for c in cps:
        print(
            f"{c.version:>7}  {c.checkpoint_at.isoformat():<32}  {c.state.value:<14}  "
            f"{'yes' if c.ever_promoted else 'no':<8}  {c.weights_hash[:12]}"
        )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    at = parse_time(args.at)
    with open_registry(args) as reg:
        res = reg.rollback_to_checkpoint(
            args.model, at, actor=args.actor, slice=args.slice, reason=args.reason or ""
        )
    if args.json:
        print_json(res.model_dump(mode="json"))
        return 0
    where = f"{res.model_id}@{res.version} (checkpoint {res.checkpoint_at.isoformat()})"
    if not res.changed:
        print(f"{where} already serves slice {res.slice!r}; nothing changed")
        return 0
    rolled = ", ".join(str(s.version) for s in res.steps)
    print(f"{where} now serves slice {res.slice!r}; rolled back: {rolled}")
    for s in res.steps:
        for c in s.caveats:
            print(f"  caveat ({s.version}): {c}")
    return 0


def cmd_retain(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        archived = reg.retain_checkpoints(args.model, actor=args.actor)
    if not archived:
        print(f"{args.model}: every checkpoint past retention is already archived or protected")
    for v, s in archived:
        print(f"{args.model}@{v} ARCHIVED on slice {s!r} (past retention)")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("checkpoint", help="a continuous learner's checkpoints (spec.continuous)")
    cs = p.add_subparsers(dest="checkpoint_cmd", required=True, metavar="ACTION")
    ls = cs.add_parser("list", help="the checkpoints on a slice, oldest first")
    ls.add_argument("model")
    ls.add_argument("--slice", default="global")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_list)
    rb = cs.add_parser(
        "rollback",
        help="serve the newest checkpoint at or before --at that was promoted on the slice",
    )
    rb.add_argument("model")
    rb.add_argument("--at", required=True, metavar="T", help="ISO 8601 time with a timezone")
    rb.add_argument("--slice", default="global")
    rb.add_argument("--reason", default=None, help="kept in each audit entry")
    rb.add_argument("--json", action="store_true")
    actor_opt(rb, required=True)
    rb.set_defaults(fn=cmd_rollback)
    rt = cs.add_parser("retain", help="archive checkpoints older than the newest K now")
    rt.add_argument("model")
    actor_opt(rt)
    rt.set_defaults(fn=cmd_retain)
