"""The canary engine: each verdict on constructed evidence, per-slice Bonferroni, SRM, and
its error rates by seeded simulation of canaries at production defaults."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from modelops.evaluation import (
    ArmArrays,
    ArmStats,
    CanaryAction,
    CanaryEngine,
    CanaryPolicy,
    SequentialState,
    as_arrays,
    log_ratio_difference,
)
from modelops.evaluation.simulate import ClickModel

MODEL = ClickModel()


def arm(n: int, effect: float = 0.0) -> ArmStats:
    """An arm whose sums sit exactly at their expectation: the estimate is the truth."""
    m = MODEL.user_moments(effect).mean
    return ArmStats(
        n_users=n, sum_x=n * m[0], sum_y=n * m[1], sum_xx=n * m[2], sum_yy=n * m[3],
        sum_xy=n * m[4],
    )


def test_clearly_worse_rolls_back_at_any_step_with_the_reason() -> None:
    d = CanaryEngine().decide(arm(3000, -0.3), arm(60_000), percent=5, dwell_done=False,
                              metric="click")
    assert d.action == "ROLLBACK"
    assert d.test.state == "REJECT"
    assert "click harm confirmed" in d.reason and "-30.0%" in d.reason
    assert d.test.lift == pytest.approx(-0.3, abs=1e-9)
    assert d.test.lift_high is not None and d.test.lift_high < 0


def test_equal_at_the_top_with_enough_sample_passes() -> None:
    d = CanaryEngine().decide(arm(8000), arm(72_000), percent=10, dwell_done=True)
    assert (d.action, d.test.state) == ("PASS", "ACCEPT")
    assert "at most 10% of the time" in d.reason


def test_no_breach_yet_is_not_a_pass() -> None:
    """Equal rates, past the minimum sample, but the likelihood ratio is still between the
    boundaries: hold at the top and say why."""
    d = CanaryEngine().decide(arm(1200), arm(10_800), percent=10, dwell_done=True)
    assert d.test.state == "CONTINUE"
    assert d.action == "HOLD"
    assert d.reason.startswith("inconclusive: not enough traffic yet at 10%")


def test_thin_traffic_holds_honestly_and_does_not_step() -> None:
    d = CanaryEngine().decide(arm(400), arm(40_000), percent=1, dwell_done=True)
    assert (d.action, d.test.state) == ("HOLD", "TOO_FEW")
    assert "not enough traffic at 1%: 400 candidate" in d.reason


def test_steps_up_the_ladder_when_dwell_is_over_and_no_harm_is_confirmed() -> None:
    e = CanaryEngine()
    d = e.decide(arm(1500), arm(150_000), percent=1, dwell_done=True)
    assert (d.action, d.next_percent) == ("ADVANCE", 5)
    d = e.decide(arm(1500), arm(150_000), percent=1, dwell_done=False)
    assert d.action == "HOLD" and "dwell" in d.reason


def test_truncation_holds_and_escalates() -> None:
    """A 5%-worse candidate sits between 'no harm' and 'worse by 10%'; with enough users the
    test reaches its maximum information without crossing: a human decides."""
    pol = CanaryPolicy(max_information_factor=1.0)
    d = CanaryEngine(pol).decide(arm(20_000, -0.05), arm(180_000), percent=10, dwell_done=True)
    assert d.test.state == "TRUNCATED"
    assert d.action == "HOLD" and d.escalate
    assert "a human decides" in d.reason


def test_a_harmed_protected_slice_rolls_back_and_is_named() -> None:
    """The whole slice looks fine; the protected slice 'eu' is 30% worse. Bonferroni over the
    family of 1 + 2 tests raises each threshold to 3 / alpha."""
    e = CanaryEngine()
    d = e.decide(
        arm(9000), arm(81_000), percent=10, dwell_done=True,
        slices={"eu": (arm(2500, -0.3), arm(22_500)), "us": (arm(6500), arm(58_500))},
    )
    assert d.action == "ROLLBACK"
    assert "on protected slice eu" in d.reason and "Bonferroni over 3 tests" in d.reason
    assert d.slices["eu"].state == "REJECT" and d.slices["us"].state != "REJECT"
    assert d.test.upper == pytest.approx(math.log(3 / CanaryPolicy().alpha))


def test_bonferroni_threshold_is_what_decides() -> None:
    """Evidence between log(1/alpha) and log(3/alpha): the candidate alone is rolled back,
    the same evidence on one protected slice in a family of three is not."""
    pol = CanaryPolicy()
    one, three = pol.design(1), pol.design(3)
    b = arm(18_000)
    for n in range(1000, 20_000, 20):  # harm evidence grows with the candidate's users
        c = arm(n, -0.12)
        llr = float(one.log_lr(*log_ratio_difference(as_arrays(c), as_arrays(b)))[0])
        if one.upper <= llr < three.upper:
            break
    else:
        pytest.fail("no sample size puts the evidence between the two thresholds")
    e = CanaryEngine(pol)
    assert e.decide(c, b, percent=10, dwell_done=False).action == "ROLLBACK"
    d = e.decide(
        arm(50_000), arm(450_000), percent=10, dwell_done=False,
        slices={"eu": (c, b), "us": (arm(5000), arm(45_000))},
    )
    assert d.slices["eu"].state == "CONTINUE" and d.action != "ROLLBACK"


def test_sample_ratio_mismatch_holds_every_decision() -> None:
    """A clear harm, but the step's users are 5.6% where 5% was configured: no decision on
    this data, an alert instead."""
    d = CanaryEngine().decide(
        arm(3000, -0.3), arm(60_000), percent=5, dwell_done=True, assigned=(5600, 94_400)
    )
    assert d.action == "HOLD" and d.escalate
    assert d.srm is not None and d.srm.mismatch
    assert d.reason.startswith("sample ratio mismatch")
    fine = CanaryEngine().decide(
        arm(3000, -0.3), arm(60_000), percent=5, dwell_done=True, assigned=(5010, 94_990)
    )
    assert fine.action == "ROLLBACK" and fine.srm is not None and not fine.srm.mismatch


def test_batch_and_single_agree() -> None:
    e = CanaryEngine()
    cases = [(arm(3000, -0.3), arm(60_000), 5, False), (arm(8000), arm(72_000), 10, True),
             (arm(400), arm(40_000), 1, True), (arm(1500), arm(150_000), 1, True)]
    batch = e.decide_batch([c for c, *_ in cases], [b for _, b, *_ in cases],
                           percent=[p for *_, p, _ in cases], dwell_done=[w for *_, w in cases])
    singles = [e.decide(c, b, percent=p, dwell_done=w).action for c, b, p, w in cases]
    assert [CanaryAction(int(a)).name for a in batch.action] == singles


def test_policy_direction_for_lower_is_better_metrics() -> None:
    """For a metric where lower is better (errors per request), harm is an increase."""
    pol = CanaryPolicy(higher_is_better=False)
    assert pol.design().effect == pytest.approx(math.log(1.1))
    e = CanaryEngine(pol)
    d = e.decide(arm(3000, +0.3), arm(60_000), percent=5, dwell_done=False)
    assert d.action == "ROLLBACK"
    assert e.decide(arm(3000, -0.3), arm(60_000), percent=5, dwell_done=False).action != "ROLLBACK"


def test_invalid_ladder_is_refused() -> None:
    with pytest.raises(ValueError, match="increasing"):
        CanaryEngine(ladder=(5, 1))


# ---------------------------------------------------------------- error rates by simulation


def _simulate(effect: float, sims: int, seed: int) -> np.ndarray:
    """Canaries at production defaults (1M users a day, 5-minute ticks, 1/5/10% with 1 h
    dwell), through decide_batch, until each passes, rolls back or 12 hours pass.
    Returns 1 passed / 2 rolled back / 0 undecided."""
    rng = np.random.default_rng(seed)
    engine = CanaryEngine()
    prod_m = MODEL.user_moments()
    pct = np.full(sims, 1)
    start = np.zeros(sims, dtype=int)
    cand = [np.zeros(sims) for _ in range(6)]
    prod = [np.zeros(sims) for _ in range(6)]
    out = np.zeros(sims, dtype=int)
    active = np.ones(sims, dtype=bool)
    for t in range(144):
        idx = np.flatnonzero(active)
        if not idx.size:
            break
        total = rng.poisson(MODEL.users_per_tick, size=idx.size)
        nc = rng.binomial(total, pct[idx] / 100)
        for acc, d in ((cand, MODEL.arm_sums(rng, nc, effect)),
                       (prod, MODEL.clt_sums(rng, total - nc, prod_m))):
            for a, v in zip(acc, d, strict=True):
                a[idx] += v
        r = engine.decide_batch(
            ArmArrays(*(a[idx] for a in cand)), ArmArrays(*(a[idx] for a in prod)),
            percent=pct[idx], dwell_done=(t - start[idx] + 1) >= 12,
        )
        adv = r.action == CanaryAction.ADVANCE
        pct[idx[adv]] = r.next_percent[adv]
        start[idx[adv]] = t + 1
        for code, val in ((CanaryAction.PASS, 1), (CanaryAction.ROLLBACK, 2)):
            hit = idx[r.action == code]
            out[hit], active[hit] = val, False
    return out


def test_simulated_false_rollbacks_are_within_alpha() -> None:
    """300 canaries equal to prod, peeking at every tick: the count of rollbacks must be
    consistent with the declared 0.5% (binomial tail >= 0.001: 6 or more of 300 would fail),
    and they pass."""
    out = _simulate(0.0, 300, seed=31)
    k = int(np.sum(out == 2))
    assert stats.binom.sf(k - 1, 300, CanaryPolicy().alpha) >= 0.001, k
    assert np.mean(out == 1) >= 0.97


def test_simulated_power_at_the_margin_and_beyond() -> None:
    """300 canaries 10% worse: rolled back before promotion consistent with the declared 90%
    (binomial lower tail >= 0.001); 200 canaries 30% worse: every one rolled back."""
    out = _simulate(-0.10, 300, seed=32)
    k = int(np.sum(out == 2))
    assert stats.binom.cdf(k, 300, CanaryPolicy().power) >= 0.001, k
    assert np.all(_simulate(-0.30, 200, seed=33) == 2)


def test_state_enum_is_stable_for_batches() -> None:
    assert [s.value for s in SequentialState] == [0, 1, 2, 3, 4]


def test_fixed_horizon_users_is_statsmodels_two_sample_z() -> None:
    """The ASN benchmark's denominator: a one-sided two-sample z-test with 9 prod users per
    candidate user, effect log(0.9) over a per-user sd sqrt(v), at alpha 0.005 and power 0.9."""
    from statsmodels.stats.power import NormalIndPower

    v = 5.46
    pol = CanaryPolicy()
    n = NormalIndPower().solve_power(
        effect_size=abs(math.log(1 - pol.harm_margin)) / math.sqrt(v), alpha=pol.alpha,
        power=pol.power, ratio=9.0, alternative="larger",
    )
    assert pol.fixed_horizon_users(v, v, 9.0) == pytest.approx(n, rel=1e-6)
