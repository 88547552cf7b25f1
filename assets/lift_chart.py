"""The lift with its confidence sequence over time, per arm, as asset metadata.

Given one arm's looks (the log-ratio effect theta = log(R_candidate / R_prod) and its
delta-method variance at each look, `modelops.evaluation.ratio.log_ratio_difference`), it
draws the always-valid interval (`modelops.evaluation.sequential.confidence_sequence`: the
normal-mixture boundary of Robbins 1970 and Howard et al. 2021) as a text chart and a table.
A confidence sequence covers the true lift at every look at once, so the chart may be read
at any tick: the arm has won when the whole interval sits right of zero, lost when left.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np

from modelops.evaluation.sequential import confidence_sequence

__all__ = ["lift_chart_markdown", "lift_chart_metadata", "lift_chart_table", "lift_series"]

_WIDTH = 40


def lift_series(
    theta: Sequence[float], var: Sequence[float], *, alpha: float, planned_information: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lift, lower, upper) as relative effects (exp(theta) - 1), per look."""
    lo, hi = confidence_sequence(theta, var, alpha, planned_information)
    th = np.asarray(theta, dtype=float)
    return np.expm1(th), np.expm1(lo), np.expm1(hi)


def _row(lift: float, lo: float, hi: float, left: float, right: float) -> str:
    def col(x: float) -> int:
        return int(round((min(max(x, left), right) - left) / (right - left) * (_WIDTH - 1)))

    cells = ["·"] * _WIDTH  # not spaces: HTML collapses them, and the axis with them
    a, b = col(lo), col(hi)
    for i in range(a, b + 1):
        cells[i] = "─"
    cells[col(0.0)] = "│" if cells[col(0.0)] == "·" else "┼"
    if np.isfinite(lift):
        cells[col(lift)] = "●"
    return "".join(cells)


def lift_chart_markdown(
    arm: str, data: Mapping[str, Any], *, alpha: float, planned_information: float
) -> str:
    """One arm's chart. `data`: {"looks": labels, "theta": [...], "var": [...]}. One entry
    per arm keeps each under the 1,000 characters the UI shows inline."""
    lift, lo, hi = lift_series(
        data["theta"], data["var"], alpha=alpha, planned_information=planned_information
    )
    finite = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)], [0.0]])
    span = max(float(np.max(np.abs(finite))), 1e-3)
    left, right = -span, span
    lines = [
        f"**{arm}**: lift with its {1 - alpha:.0%} confidence sequence (valid at every look); "
        f"axis {left:+.1%} to {right:+.1%}, `│` no effect, `●` the estimate, `─` the interval.",
        "",
        "| look | interval | lift |",
        "|---|---|---:|",
    ]
    for look, li, a, b in zip(data["looks"], lift, lo, hi, strict=True):
        if not (np.isfinite(a) and np.isfinite(b)):
            lines.append(f"| {look} | no users yet | |")
            continue
        lines.append(f"| {look} | `{_row(li, a, b, left, right)}` | {li:+.2%} |")
    return "\n".join(lines)


def lift_chart_metadata(
    arms: Mapping[str, Mapping[str, Any]], *, alpha: float, planned_information: float
) -> dict[str, Any]:
    """Asset metadata: the table of every look, and one chart per arm."""
    kw = {"alpha": alpha, "planned_information": planned_information}
    out: dict[str, Any] = {"lift_per_look": lift_chart_table(arms, **kw)}
    for arm, data in arms.items():
        out[f"lift_chart/{arm}"] = dg.MetadataValue.md(lift_chart_markdown(arm, data, **kw))
    return out


def lift_chart_table(
    arms: Mapping[str, Mapping[str, Any]], *, alpha: float, planned_information: float
) -> dg.TableMetadataValue:
    cols = [
        dg.TableColumn("arm", "string"),
        dg.TableColumn("look", "string"),
        dg.TableColumn("lift", "float"),
        dg.TableColumn("lower", "float"),
        dg.TableColumn("upper", "float"),
    ]
    recs = []
    for arm, data in arms.items():
        lift, lo, hi = lift_series(
            data["theta"], data["var"], alpha=alpha, planned_information=planned_information
        )
        for look, li, a, b in zip(data["looks"], lift, lo, hi, strict=True):
            recs.append(
                dg.TableRecord(
                    {
                        "arm": arm,
                        "look": str(look),
                        "lift": round(float(li), 5) if np.isfinite(li) else None,
                        "lower": round(float(a), 5) if np.isfinite(a) else None,
                        "upper": round(float(b), 5) if np.isfinite(b) else None,
                    }
                )
            )
    return dg.MetadataValue.table(records=recs, schema=dg.TableSchema(columns=cols))
