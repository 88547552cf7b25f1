"""The lift chart: a confidence sequence per arm over looks, drawn from seeded per-user
traffic through the same ratio and sequential functions the A/B engine uses."""

from __future__ import annotations

import numpy as np

from assets.lift_chart import (
    lift_chart_markdown,
    lift_chart_metadata,
    lift_chart_table,
    lift_series,
)
from modelops.evaluation.ratio import ArmArrays, log_ratio_difference
from modelops.evaluation.sequential import confidence_sequence


def cumulative_arm(
    rng: np.random.Generator, rate: float, users_per_look: int, looks: int
) -> ArmArrays:
    """Per-user clicks and requests (correlated within a user), summed cumulatively per look."""
    n = users_per_look * looks
    req = 1 + rng.poisson(4, size=n)
    p = rng.beta(10 * rate, 10 * (1 - rate), size=n)
    clicks = rng.binomial(req, p).astype(float)
    y = req.astype(float)
    cut = np.arange(1, looks + 1) * users_per_look

    def cum(v: np.ndarray) -> np.ndarray:
        return np.cumsum(v)[cut - 1]

    return ArmArrays(
        cut.astype(float), cum(clicks), cum(y), cum(clicks**2), cum(y**2), cum(clicks * y)
    )


def arms_data(seed: int = 4) -> dict[str, dict[str, object]]:
    rng = np.random.default_rng(seed)
    looks = 8
    base = cumulative_arm(rng, 0.05, 4000, looks)
    out: dict[str, dict[str, object]] = {}
    for arm, effect in (("v2 (+8%)", 1.08), ("v3 (same)", 1.0)):
        cand = cumulative_arm(rng, 0.05 * effect, 4000, looks)
        theta, var = log_ratio_difference(cand, base)
        out[arm] = {"looks": [f"day {i + 1}" for i in range(looks)], "theta": theta, "var": var}
    return out


def test_lift_series_is_the_confidence_sequence_on_the_relative_scale() -> None:
    data = arms_data()["v2 (+8%)"]
    lift, lo, hi = lift_series(data["theta"], data["var"], alpha=0.05, planned_information=2e4)
    clo, chi = confidence_sequence(data["theta"], data["var"], 0.05, 2e4)
    assert np.allclose(lo, np.expm1(clo)) and np.allclose(hi, np.expm1(chi))
    assert np.all(lo < lift) and np.all(lift < hi)
    assert np.all(np.diff(hi - lo) < 0)  # more users, a narrower interval


def test_chart_draws_every_look_of_every_arm() -> None:
    arms = arms_data()
    meta = lift_chart_metadata(arms, alpha=0.05, planned_information=2e4)
    rows = []
    for arm, data in arms.items():
        md = lift_chart_markdown(arm, data, alpha=0.05, planned_information=2e4)
        assert md.startswith(f"**{arm}**") and meta[f"lift_chart/{arm}"].value == md
        assert len(md) < 1000  # the UI shows markdown inline under 1,000 characters
        rows += [line for line in md.splitlines() if line.startswith("| day ")]
    assert len(rows) == 16 and all("●" in r for r in rows)
    # The no-effect mark is drawn unless the estimate sits on it (the equal arm, at times).
    assert all(("│" in r) or ("┼" in r) for r in rows[:8])
    table = lift_chart_table(arms, alpha=0.05, planned_information=2e4)
    assert len(table.records) == 16
    last = [r.data for r in table.records if r.data["look"] == "day 8"]
    # The +8% arm ends confidently above zero; the equal arm's interval still holds zero.
    assert last[0]["lower"] > 0 and last[1]["lower"] < 0 < last[1]["upper"]
