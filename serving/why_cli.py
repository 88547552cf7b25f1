"""`modelops why MODEL [--slice S] [--since T]`: the diagnosis tree over the registry and
the prediction log.

It lives in the serving plugin because steps 2 and 4 read logged requests (the prediction
log is the serving plane's); the walk itself is the core's `Registry.diagnose`, handed the
two windows read here: (since, now] and the window of the same length before it.
"""

from __future__ import annotations

import argparse
import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from modelops.cli import database_url
from modelops.errors import SpecError

__all__ = ["register", "parse_since", "observations"]

_REL = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_UNIT = {"m": "minutes", "h": "hours", "d": "days"}
MAX_ROWS = 200_000


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO time (UTC unless it says otherwise), or a span back from now: 90m, 24h, 7d."""
    now = now or datetime.now(UTC)
    if m := _REL.match(text.strip()):
        amount = float(m.group(1))
        if amount <= 0:
            raise SpecError(f"--since {text}: allowed: a positive span such as 24h or 7d")
        return now - timedelta(**{_UNIT[m.group(2)]: amount})
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(
            f"--since {text!r}: allowed: an ISO time (2026-01-31T08:00) or a span (90m, 24h, 7d)"
        ) from None
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    if ts >= now:
        raise SpecError(f"--since {text}: in the future; allowed: a time before now")
    return ts


def _score(outputs: Any) -> float | None:
    """The first number in a request's outputs (the score of a 1-output model)."""
    value = outputs
    for _ in range(8):
        if isinstance(value, dict):
            value = next(iter(value.values()), None)
        elif isinstance(value, list | tuple):
            value = value[0] if value else None
        else:
            break
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _columns(rows: list[Any]) -> tuple[dict[str, Any], Any]:
    """Feature columns (numeric where every value is, else text) and the scores."""
    import numpy as np

    names = sorted({k for r in rows if r.features for k in r.features})
    cols: dict[str, Any] = {}
    for n in names:
        vals = [(r.features or {}).get(n) for r in rows]
        if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in vals):
            cols[n] = np.array([np.nan if v is None else float(v) for v in vals], dtype=float)
        else:
            cols[n] = np.array([None if v is None else str(v) for v in vals], dtype=object)
    scores = [_score(r.outputs) for r in rows]
    pred = (
        np.array([np.nan if s is None else s for s in scores], dtype=float)
        if any(s is not None for s in scores)
        else None
    )
    return cols, pred


def observations(reader: Any, model_id: str, slice_: str, since: datetime, now: datetime) -> Any:
    """The two windows from the prediction log: successful prod-arm requests (what users got
    from prod) since `since`, and the window of the same length before it."""
    import numpy as np

    from modelops.registry import Observations

    def read(a: datetime, b: datetime) -> list[Any]:
        rows = reader.records(
            model_id,
            None,
            since_ts=a.timestamp(),
            until_ts=b.timestamp(),
            limit=MAX_ROWS,
            slice=slice_,
        )
        return [r for r in rows if r.error is None and r.arm in ("prod", "fallback")]

    cur = read(since, now)
    before = read(since - (now - since), since)
    cols, pred = _columns(cur)
    bcols, bpred = _columns(before)
    segs = [r.segment for r in cur]
    return Observations(
        source=f"prediction log {reader.url}",
        current=cols,
        current_prediction=pred,
        current_segments=np.array([s or "-" for s in segs], dtype=object) if any(segs) else None,
        before=bcols,
        before_prediction=bpred,
        rows_current=len(cur),
        rows_before=len(before),
    )


def _reference(version: Any) -> tuple[Any, str]:
    """The version's training drift reference from the artifact store, if it names one."""
    digest = getattr(version, "drift_reference_hash", None)
    if not digest:
        return None, f"v{version.version} has no training reference"
    from modelops.cli.cmd_support import artifact_store
    from modelops.evaluation.drift import DriftReference

    try:
        raw = artifact_store(None).read_bytes(digest)
        return DriftReference.model_validate_json(raw), ""
    except Exception as exc:  # noqa: BLE001 - a reference we cannot read is reported, not fatal
        return None, f"v{version.version}'s training reference is unreadable: {exc}"


def cmd_why(args: argparse.Namespace) -> int:
    from modelops.cli.cmd_support import open_registry, print_json
    from serving.predlog.reader import PredictionLogReader

    now = datetime.now(UTC)
    since = parse_since(args.since, now)
    with open_registry(args) as reg:
        spec = reg.get_model(args.model)
        slice_ = args.slice or spec.slices[0]
        reference, note = None, ""
        prod = reg.desired_state(args.model, slice_).prod_version
        if prod is not None:
            reference, note = _reference(reg.get_version(args.model, prod))
        with PredictionLogReader(args.predlog) as reader:
            obs = observations(reader, args.model, slice_, since, now)
        d = reg.diagnose(
            args.model,
            slice=slice_,
            since=since,
            observations=obs,
            reference=reference,
            reference_note=note,
        )
    if args.json:
        print_json(d.model_dump(mode="json"))
        return 0
    print(
        f"why is {d.model_id} (slice {d.slice}) different since "
        f"{d.since.isoformat(timespec='seconds')}? prod then v{d.prod_then}, now v{d.prod_now}"
    )
    mark = {True: "!", False: " ", None: "?"}
    for s in d.steps:
        print(f"{mark[s.changed]} {s.step}. {s.question}")
        print(f"     {s.answer}")
    return 0


def register(sub: Any) -> None:
    w = sub.add_parser(
        "why", help="walk the diagnosis tree: why is this model performing differently?"
    )
    w.add_argument("model")
    w.add_argument("--slice", default=None, help="the model's slice (default: its first)")
    w.add_argument(
        "--since", default="24h", metavar="T", help="ISO time or span back (90m, 24h, 7d)"
    )
    w.add_argument(
        "--predlog",
        type=database_url("prediction log"),
        default=None,
        metavar="URL",
        help="prediction log (default: MODELOPS_PREDLOG_URL, else $MODELOPS_HOME/predictions.db)",
    )
    w.add_argument("--json", action="store_true")
    w.set_defaults(fn=cmd_why)
