"""The demo's world and its honesty checks, without processes: the declared policy laid over
the fleet, the simulator's truth, the planned sample, and the old rule against the new on the
same evidence (a candidate 15% worse)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from demo.observe import OLD_RULE_DROP, canary_plan, old_rule_decision
from demo.run import load_scenario, prepare_home
from demo.traffic import TrafficSim, mean_click_rate
from modelops.evaluation.decision import Evidence, Verdict
from modelops.evaluation.ratio import ArmStats, per_user_log_variance
from modelops.evaluation.sequential_rule import SequentialRule
from modelops.evidence import OutcomeStats, UserSums, WindowStats
from modelops.fleet import load_fleet
from modelops.spec import State
from serving.routing import BUCKETS, bucket


def test_declared_policy_is_laid_over_the_fleet(tmp_path: Path) -> None:
    fleet = load_fleet(prepare_home(tmp_path / "home", None))
    assert fleet.canary_ladder == [10]  # the design's 10% limit holds
    for m in ("ctr_gbdt", "ctr_mlp", "ctr_keras", "ctr_lite"):
        decl = fleet.model(m)
        assert decl.online.max_primary_drop == 0.1  # the harm margin, production's figure
        assert decl.spec.policy.min_samples == 200
        # Declared from measured honest refreshes, far from the miscalibrated candidate's.
        assert decl.spec.policy.shadow.min_agreement == 0.85
        assert decl.spec.policy.shadow.max_js_distance == 0.2
        assert decl.spec.policy.shadow.max_kl == 0.05  # the default
    lite = fleet.model("ctr_lite")
    assert lite.dataset == "ctr_clicks_lite" and lite.trainer == fleet.model("ctr_gbdt").trainer
    # A subset keeps only the datasets its models read.
    one = load_fleet(prepare_home(tmp_path / "one", ["ctr_gbdt"]))
    assert [m.model_id for m in one.models] == ["ctr_gbdt"]
    assert {d.name for d in one.datasets} == {"ctr_clicks", "ctr_eval"}


def test_scenario_truth_is_what_the_outcomes_expect() -> None:
    world = load_scenario()["world"]["refresh"]
    assert world["ctr_keras"]["effect"] == pytest.approx(-0.15)
    assert world["ctr_keras"]["expect"] == "ROLLED_BACK"
    assert world["ctr_gbdt"]["effect"] >= 0 and world["ctr_gbdt"]["expect"] == "PROMOTED"
    assert world["ctr_mlp"]["effect"] > 0 and world["ctr_mlp"]["expect"] == "AB_PROMOTED"
    assert world["ctr_lite"]["label_shift"] > 0 and world["ctr_lite"]["expect"] == "FAILED"
    assert world["ctr_lite"]["then"]["expect"] == "SRM"


def test_simulated_clicks_have_the_declared_effect() -> None:
    sim = TrafficSim("http://127.0.0.1:1", ["m"], token="t", users=4000, seed=3)
    sim.set_effect("m", 2, -0.15)
    assert sim.true_rate("m", 2) == pytest.approx(sim.base_rate * 0.85)
    assert sim.base_rate == pytest.approx(mean_click_rate(), rel=1e-9)
    rng = np.random.default_rng(0)
    p_x = rng.uniform(0.05, 0.6, size=4000)
    users = np.arange(4000)
    base = np.mean(
        [sim.click_probability("m", 1, int(u), float(p)) for u, p in zip(users, p_x, strict=True)]
    )
    worse = np.mean(
        [sim.click_probability("m", 2, int(u), float(p)) for u, p in zip(users, p_x, strict=True)]
    )
    # Every user clicks 15% less (up to the clip at 0.99 of a few heavy clickers).
    assert worse / base == pytest.approx(0.85, rel=1e-3)


def test_lost_users_are_exactly_the_canary_fraction() -> None:
    sim = TrafficSim("http://127.0.0.1:1", ["m"], token="t", users=20000, seed=1)
    sim.lose_canary_users("m", 2, 0.3)
    assert all(sim._arrives("m", i) for i in range(2000))  # no canary on the table yet
    sim.set_canary("m", 2, 10)
    lost = [i for i in range(20000) if not sim._arrives("m", i)]
    in_canary = [
        i for i in range(20000) if bucket("canary:m:global", sim.users[i]) < 10 * BUCKETS / 100
    ]
    assert set(lost) <= set(in_canary)
    assert len(lost) / len(in_canary) == pytest.approx(0.3, abs=0.05)
    assert lost == [i for i in range(20000) if not sim._arrives("m", i)]  # the same users


def _arm(rng: np.random.Generator, n: int, rate: float) -> tuple[UserSums, OutcomeStats]:
    k = 20.0
    w = rng.gamma(k, 1 / k, size=n)
    y = 1 + rng.poisson(1.0, size=n)
    x = rng.binomial(y, np.minimum(0.99, rate * w))
    a = ArmStats.from_users(x, y)
    sums = UserSums(
        users=n, sum_x=a.sum_x, sum_y=a.sum_y, sum_xx=a.sum_xx, sum_yy=a.sum_yy, sum_xy=a.sum_xy
    )
    return sums, OutcomeStats(count=int(y.sum()), mean=float(x.sum() / y.sum()))


def _window(
    version: int, arm: str, sums: UserSums, out: OutcomeStats, model: str = "ctr_keras"
) -> WindowStats:
    now = time.time()
    return WindowStats(
        model_id=model,
        version=version,
        arm=arm,
        slice="global",
        since_ts=now - 300,
        until_ts=None,
        first_ts=now - 300,
        last_ts=now,
        requests=out.count,
        errors=0,
        error_rate=0.0,
        timeouts=0,
        timeout_rate=0.0,
        latency_mean_ms=5.0,
        latency_p50_ms=4.0,
        latency_p99_ms=20.0,
        latency_max_ms=30.0,
        outcomes={"click": out},
        users=sums.users,
        user_outcomes={"click": sums},
    )


def _evidence(
    tmp_path: Path,
    candidate_effect: float,
    n_candidate: int,
    *,
    model: str = "ctr_keras",
    state: State = State.CANARY,
) -> Evidence:
    fleet = load_fleet(prepare_home(tmp_path / "home", None))
    decl = fleet.model(model)
    rng = np.random.default_rng(7)
    ab = state is State.AB_TEST
    c, co = _arm(rng, n_candidate, 0.30 * (1 + candidate_effect))
    b, bo = _arm(rng, n_candidate if ab else 9 * n_candidate, 0.30)
    now = time.time()
    return Evidence(
        model_id=model,
        slice="global",
        version=2,
        state=state,
        percent=50 if ab else 10,
        since_ts=now - 300,
        now_ts=now,
        candidate=_window(2, "ab" if ab else "canary", c, co, model),
        baseline=_window(1, "prod", b, bo, model),
        policy=decl.spec.policy,
        online=decl.online,
        durations=fleet.durations,
        canary_ladder=fleet.canary_ladder,
        tier=decl.spec.tier,
        is_weight_refresh=True,
    )


def test_the_plan_is_the_one_sided_z_sample_with_bonferroni(tmp_path: Path) -> None:
    e = _evidence(tmp_path, 0.0, 2000)
    plan = canary_plan(e, SequentialRule())
    tests = 1 + len(e.policy.protected_slices)
    # Independent: a one-sided z-test at alpha / tests with the declared power against
    # log(1 - margin), on per-user log variances measured from the same sums, 9 prod per canary.
    v_c = float(per_user_log_variance(_as(e.candidate))[0])
    v_b = float(per_user_log_variance(_as(e.baseline))[0])
    z = norm.ppf(1 - 0.005 / tests) + norm.ppf(0.9)
    expected = (z / math.log(0.9)) ** 2 * (v_c + v_b / 9)
    assert plan.users_fixed == math.ceil(expected)
    assert plan.users_expected is not None and plan.users_expected < plan.users_fixed
    assert (plan.margin, plan.power, plan.tests) == (0.1, 0.9, tests)


def _as(w: WindowStats | None):  # type: ignore[no-untyped-def]
    from modelops.evaluation.ratio import as_arrays
    from modelops.evaluation.sequential_rule import arm_stats

    assert w is not None
    return as_arrays(arm_stats(w.user_outcomes["click"]))


def test_old_rule_promotes_what_the_sequential_test_rolls_back(tmp_path: Path) -> None:
    e = _evidence(tmp_path, -0.15, 3000)
    new = SequentialRule().decide(e)
    old = old_rule_decision(e)
    assert new.verdict is Verdict.ROLLBACK and "harm confirmed" in new.reason
    assert old.verdict is Verdict.PROMOTE  # within its 20% tolerance: "no breach"
    assert OLD_RULE_DROP == 0.2


def test_a_good_candidate_is_held_until_the_test_has_its_power(tmp_path: Path) -> None:
    thin = SequentialRule().decide(_evidence(tmp_path, 0.03, 150))  # below min_samples
    assert thin.verdict is Verdict.HOLD and "inconclusive" in thin.reason
    plenty = SequentialRule().decide(_evidence(tmp_path, 0.03, 4000))
    assert plenty.verdict is Verdict.PROMOTE and "canary passed" in plenty.reason


def test_the_ab_lift_is_significant_and_plotted(tmp_path: Path) -> None:
    from demo.observe import CanaryObserver

    e = _evidence(tmp_path, 0.15, 3000, model="ctr_mlp", state=State.AB_TEST)
    d = SequentialRule().decide(e)
    assert d.verdict is Verdict.PROMOTE and "significant lift" in d.reason
    assert d.conclusion is not None and d.conclusion["concluded_with_power"]
    obs = CanaryObserver.__new__(CanaryObserver)
    obs.engine, obs.tracks, obs.print_every_s, obs.tl = SequentialRule(), {}, 10.0, print
    obs._ab(e, now=time.monotonic())
    t = obs.tracks[("ctr_mlp", 2)]
    assert t.ab_line is not None and "users per arm" in t.ab_line
    plot = obs.lift_plot(("ctr_mlp", 2))
    assert len(plot) == 2 and "*" in plot[1]


class _FakeWatcher:
    """The registry as the owners see it: states, versions, alerts."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, int], str] = {}
        self.alerts: set[tuple[str, int, str]] = set()
        self.registry = None
        self.tl = print

    def versions(self, m: str) -> list[int]:
        return [v for (mm, v) in self.states if mm == m] or [1]

    def prod_version(self, m: str) -> int:
        return 1

    def state(self, m: str, v: int) -> str | None:
        return self.states.get((m, v))

    def alert(self, m: str, v: int, kind: str) -> object | None:
        return object() if (m, v, kind) in self.alerts else None

    def moved(self, m: str, v: int, to: str) -> None:
        return None

    def entries(self, m: str) -> list[object]:
        return []


def test_owners_start_the_ab_roll_back_on_srm_and_follow_up(tmp_path: Path) -> None:
    from demo.owners import Scenario

    home = tmp_path / "home"
    fleet = load_fleet(prepare_home(home, None))
    world = load_scenario()["world"]
    sim = TrafficSim("http://127.0.0.1:1", ["ctr_mlp", "ctr_lite"], token="t", users=100)
    w = _FakeWatcher()
    launched: list[tuple[str, dict]] = []
    sc = Scenario(
        home, fleet, world, sim, w, lambda job, **kw: launched.append((job, kw)) or "id", print
    )
    for m in ("ctr_mlp", "ctr_lite"):
        sc.set_truth(m, world["refresh"][m])
    sc.write_data(["ctr_mlp", "ctr_lite"])
    assert (home / "data" / "ctr_clicks_lite" / "v2.npz").exists()
    assert sim.true_rate("ctr_mlp", 2) == pytest.approx(sim.base_rate * 1.15)

    w.states[("ctr_mlp", 2)] = "CANARY"
    sc.hook()
    sc.hook()  # once only
    [(job, kw)] = launched
    assert job == "modelops_start_ab" and kw["tags"]["modelops/action"] == "start_ab"

    w.states[("ctr_lite", 2)] = "FAILED"  # its truth: FAILED, then the SRM follow-up
    sc.hook()
    assert launched[-1][0] == "refresh_ctr_lite"
    assert (home / "data" / "ctr_clicks_lite" / "v3.npz").exists()
    assert sc.plan["ctr_lite"]["version"] == 3 and sc.plan["ctr_lite"]["expect"] == "SRM"
    w.states[("ctr_lite", 3)] = "CANARY"
    w.alerts.add(("ctr_lite", 3, "online_srm"))
    sc.hook()
    assert launched[-1][0] == "modelops_rollback"
    assert [e["version"] for e in sc.entries() if e["model"] == "ctr_lite"] == [2, 3]
