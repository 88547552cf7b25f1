"""`modelops ab plan` and `modelops ab layer`: sizing an A/B test before it runs, and the
orthogonal layers the registry allocates to running ones. `ab_lines` is the A/B part of
`modelops show MODEL@V`."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from modelops.cli.args import bounded_int
from modelops.cli.cmd_support import actor_opt, open_registry, print_json
from modelops.errors import SpecError


def fraction(label: str) -> Callable[[str], float]:
    """A number strictly between 0 and 1 (a rate, a split, an alpha)."""

    def parse(text: str) -> float:
        value = float(text)  # ValueError: argparse's usage error, exit 2
        if not 0 < value < 1:
            raise SpecError(f"{label} {text}: out of range; allowed: strictly between 0 and 1")
        return value

    parse.__name__ = "float"
    return parse


def relative(text: str) -> float:
    """A relative lift: non-zero, above -1 (a drop of at most 100%)."""
    value = float(text)
    if not -1 < value < 10 or value == 0:
        raise SpecError(
            f"--relative-mde {text}: allowed: a non-zero relative change above -1, e.g. 0.01 "
            "for a 1% lift"
        )
    return value


relative.__name__ = "float"


def cmd_ab_plan(args: argparse.Namespace) -> int:
    from modelops.evaluation.ab import plan_ab

    try:
        p = plan_ab(
            args.baseline,
            args.relative_mde,
            alpha=args.alpha,
            power=args.power,
            daily_users=args.daily_users,
            split=args.split,
        )
    except ValueError as exc:  # a combination no plan exists for, e.g. a rate past 1
        raise SpecError(f"ab plan: {exc}") from None
    if args.json:
        print_json(p.model_dump(mode="json"))
        return 0
    treat = p.baseline * (1 + p.relative_mde)
    print(
        f"A/B plan: baseline {p.baseline:.4g} -> {treat:.4g} ({p.relative_mde:+.2%} relative), "
        f"two-sided alpha {p.alpha:g}, power {p.power:.0%}, split {p.split:.0%} candidate"
    )
    print(
        f"  users per arm   candidate {p.treatment_users:,}   prod {p.control_users:,}   "
        f"total {p.total_users:,}"
    )
    if p.days is None:
        print("  days            give --daily-users N for the duration")
    else:
        print(f"  days            {p.days:.1f} at {args.daily_users:,} users a day")
    seq = (
        f"  sequential test (always valid, one-sided alpha {p.alpha / 2:g}): expected "
        f"{p.sequential_users_no_effect:,} users at no effect, {p.sequential_users_at_mde:,} "
        f"at the MDE, at most {p.sequential_users_max:,}"
    )
    if p.sequential_days_max is not None:
        seq += (
            f" ({p.sequential_days_no_effect:.1f}, {p.sequential_days_at_mde:.1f} and "
            f"{p.sequential_days_max:.1f} days)"
        )
    print(seq)
    print("  method          two proportions on Cohen's h (arcsine), fixed horizon")
    return 0


def cmd_ab_layer(args: argparse.Namespace) -> int:
    with open_registry(args) as reg:
        if args.capacity is not None:
            usage = reg.set_layer_capacity(args.layer, args.capacity, actor=args.actor)
        else:
            usage = reg.layer_usage(args.layer)
    if args.json:
        print_json(usage.model_dump(mode="json"))
        return 0
    print(f"layer {usage.layer}: {usage.used}% of {usage.capacity}% held")
    for h in usage.holders:
        print(f"  {h}")
    return 0


def ab_lines(reg: Any, model_id: str, version: int) -> list[str]:
    """The version's A/B entries, each with its recorded plan, for `show MODEL@V`."""
    out = []
    for e in reg.ab_experiments(model_id, version):
        p = e.plan
        line = (
            f"  ab[{e.slice}] {'running' if e.live else 'ended'} since "
            f"{e.started_at.isoformat(timespec='seconds')}: layer {e.layer} share {e.share}% "
            f"split {p['split']:.0%}; plan {p['n_candidate']:,} / {p['n_prod']:,} users per arm "
            f"(candidate / prod), {p['days_needed']:g} days needed, {p['planned_days']} planned"
        )
        if p.get("min_days"):
            line += f", promotion from {p['earliest_promotion']}"
        if e.conclusion:
            power = "with" if e.conclusion["concluded_with_power"] else "without"
            line += f"; concluded {e.conclusion['outcome']} {power} its planned power"
        out.append(line)
    return out


def register(sub: Any) -> None:
    ab = sub.add_parser("ab", help="A/B tests: plan one, see or size a layer").add_subparsers(
        dest="sub", required=True, metavar="COMMAND"
    )
    p = ab.add_parser("plan", help="users per arm and days for an A/B test")
    p.add_argument("--baseline", required=True, type=fraction("--baseline"), metavar="P")
    p.add_argument("--relative-mde", required=True, type=relative, metavar="D")
    p.add_argument("--alpha", type=fraction("--alpha"), default=0.05, help="two-sided")
    p.add_argument("--power", type=fraction("--power"), default=0.8)
    p.add_argument(
        "--daily-users",
        type=bounded_int("--daily-users", 1, 10**12),
        default=None,
        metavar="N",
        help="users entering the test a day",
    )
    p.add_argument("--split", type=fraction("--split"), default=0.5, help="the candidate's share")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_ab_plan)

    la = ab.add_parser("layer", help="an orthogonal layer: who holds it; --capacity sets it")
    la.add_argument("layer")
    la.add_argument(
        "--capacity",
        type=bounded_int("--capacity", 1, 100),
        default=None,
        help="percent of the layer's users its tests may take together",
    )
    actor_opt(la)
    la.add_argument("--json", action="store_true")
    la.set_defaults(fn=cmd_ab_layer)
