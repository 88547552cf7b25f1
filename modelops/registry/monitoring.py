"""What the sensors must watch differently, fleet-wide, in one query per tick.

Two records change how a live model is judged for a while:
- a break-glass (`break_glass.heightened_until`): heightened monitoring, tighter guardrails,
  because the shadow and canary that would have measured the version were skipped;
- an IRREVERSIBLE rollback's decay window (`decay_windows`): relaxed thresholds, because
  the restored version runs on an input distribution its successor shifted, and its
  expected decay must not trigger a second, spurious rollback.

`Registry.heightened_until` and `Registry.decay_window` answer for one model; a sensor
judging the whole fleet every tick reads both tables at once here instead (one UNION ALL,
not a query per model).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Float, String, cast, literal, select, union_all

from modelops.store import db
from modelops.store.tables import break_glass, decay_windows

from .records import parse_ts

if TYPE_CHECKING:
    from . import Registry

__all__ = ["Monitoring", "monitoring_in_force"]


@dataclass(frozen=True)
class Monitoring:
    """The (model, slice)'s monitoring at one instant; None fields are not in force."""

    heightened_until: datetime | None = None
    heightened_reason: str = ""
    decay_until: datetime | None = None
    relax_factor: float = 1.0
    decay_reason: str = ""


def monitoring_in_force(registry: Registry, at: datetime) -> dict[tuple[str, str], Monitoring]:
    """Every (model, slice) under heightened monitoring or inside a decay window at `at`.

    The latest heightened period and the latest window in force win (as in
    `Registry.heightened_until` and `Registry.decay_window`). Rows are filtered coarsely in
    SQL (end after `at`, the stored ISO text) and exactly here.
    """
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    floor = at.date().isoformat()  # ISO text compares in time order from the date on
    h = select(
        literal("h").label("kind"),
        break_glass.c.id,
        break_glass.c.model_id,
        break_glass.c.slice,
        break_glass.c.ts.label("starts_at"),
        break_glass.c.heightened_until.label("ends_at"),
        cast(literal(1.0), Float).label("factor"),
        cast(break_glass.c.reason, String).label("reason"),
    ).where(break_glass.c.heightened_until >= floor)
    d = select(
        literal("d").label("kind"),
        decay_windows.c.id,
        decay_windows.c.model_id,
        decay_windows.c.slice,
        decay_windows.c.starts_at,
        decay_windows.c.ends_at,
        decay_windows.c.relax_factor.label("factor"),
        cast(decay_windows.c.reason, String).label("reason"),
    ).where(decay_windows.c.ends_at >= floor)
    with db.read_tx(registry.engine) as conn:
        rows = conn.execute(union_all(h, d)).all()
    found: dict[tuple[str, str], dict[str, object]] = {}
    for r in sorted(rows, key=lambda r: (r.kind, r.id)):  # the latest of each kind last
        start, end = parse_ts(r.starts_at), parse_ts(r.ends_at)
        if end <= at or (r.kind == "d" and start > at):
            continue
        m = found.setdefault((r.model_id, r.slice), {})
        if r.kind == "h":
            m.update(heightened_until=end, heightened_reason=r.reason)
        else:
            m.update(decay_until=end, relax_factor=float(r.factor), decay_reason=r.reason)
    return {k: Monitoring(**v) for k, v in found.items()}  # type: ignore[arg-type]
