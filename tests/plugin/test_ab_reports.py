"""The `ab_reports/<model>` asset against a real registry and prediction log.

v1 is prod and v2 enters AB_TEST at 50% (the registry records the plan). Keyed users with
correlated clicks are logged over the hour after entry, on both arms and three protected
segments. The report's looks are fixed steps over that hour; at the last look its lift and
always-valid interval must be what the A/B engine itself reports on the same users, every
look must hold only the users logged before it, and the plan's users must be the
registry's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from assets.ab_reports import (
    ABReportConfig,
    ab_report_key,
    build_ab_report_asset,
    look_times,
    materialize_ab_report,
)
from assets.online_reports import build_online_report_defs
from modelops.evaluation.ab import ABEngine, ABPolicy
from modelops.evaluation.ratio import ArmStats
from modelops.fleet import Fleet
from modelops.registry import Registry
from modelops.spec import State
from resources import PredictionLogResource, RegistryResource
from serving.predlog import PredictionLog
from serving.predlog.userhash import hash_user
from serving.records import Outcome, PredictionRecord

MODEL = "ctr_gbdt"
SEGMENTS = ("us", "de", "br")
HOUR = 3600.0


def _version(reg: Registry, label: str) -> int:
    v = reg.register_version(
        MODEL,
        weights_hash=hashlib.sha256(label.encode()).hexdigest(),
        weights_uri=f"file:///weights/{label}.onnx",
        training_run_id=f"run-{label}",
        training_data="ctr_clicks@1",
        eval_set="ctr_eval@1",
        feature_contract_ref="ctr_features@1",
    )
    reg.record_gate_result(MODEL, v.version, passed=True, results={"auc": 0.7})
    return v.version


@pytest.fixture
def ab(home: Path, demo_fleet: Fleet) -> Registry:
    """v1 PROMOTED, v2 in AB_TEST at 50% on slice global."""
    reg = Registry()
    reg.register_dataset("ctr_clicks", 1, "file:///data/ctr_clicks/v1.npz")
    reg.register_dataset("ctr_eval", 1, "file:///data/ctr_eval/v1.npz", kind="eval_set")
    reg.register_contract(demo_fleet.contract("ctr_features"))
    reg.add_team(demo_fleet.model(MODEL).spec.owner_team)
    reg.create_model(demo_fleet.model(MODEL).spec)
    reg.transition(MODEL, _version(reg, "a"), State.PROMOTED, actor="ops")
    v2 = _version(reg, "b")
    for target, kw in (
        (State.APPROVED_SHADOW, {}),
        (State.SHADOW, {"percent": 100, "mode": "live"}),
        (State.APPROVED_CANARY, {}),
        (State.CANARY, {"percent": 1}),
        (State.AB_TEST, {"percent": 50}),
    ):
        reg.transition(MODEL, v2, target, actor="ops", **kw)
    return reg


def _log_users(
    start: float, version: int, arm: str, users: int, rate: float, seed: int
) -> list[tuple[float, str, float, float]]:
    """Logs `users` keyed users over the hour after `start`, 1-6 requests each, each user
    with a click propensity of their own (Beta, mean `rate`). Returns per user (first ts,
    segment, clicks, requests)."""
    rng = np.random.default_rng(seed)
    out = []
    with PredictionLog() as log:
        for u in range(users):
            uh = hash_user(f"{arm}-{u}", b"ab-report-salt")
            seg = SEGMENTS[u % 3]
            p = rng.beta(10 * rate, 10 * (1 - rate))
            n = int(rng.integers(1, 7))
            t0 = start + float(rng.uniform(1.0, HOUR - 60.0))
            clicks = 0.0
            for j in range(n):
                rid = f"{arm}-{u}-{j}"
                ts = t0  # a user's requests fall in the same looks
                log.submit(
                    PredictionRecord(
                        request_id=rid,
                        ts=ts,
                        model_id=MODEL,
                        version=version,
                        arm=arm,
                        slice="global",
                        user_hash=uh,
                        segment=seg,
                        latency_ms=5.0,
                    )
                )
                c = float(rng.random() < p)
                clicks += c
                log.submit_outcome(Outcome(request_id=rid, ts=ts + 1, name="click", value=c))
            out.append((t0, seg, clicks, float(n)))
        assert log.flush()
    return out


def _stats(rows: list[tuple[float, str, float, float]]) -> ArmStats:
    return ArmStats.from_users([r[2] for r in rows], [r[3] for r in rows])


def _report(reg: Registry, fleet: Fleet, clock: float, **cfg: object) -> dict[str, object]:
    decl = fleet.model(MODEL)
    with dg.build_asset_context() as ctx:
        res = materialize_ab_report(
            ctx,
            decl,
            ABReportConfig(**cfg),  # type: ignore[arg-type]
            registry=RegistryResource(),
            predlog=PredictionLogResource(),
            clock=lambda: clock,
        )
    assert res.asset_key == ab_report_key(decl)
    return dict(res.metadata or {})


def test_the_report_draws_the_engines_lift_and_interval_per_arm_and_look(
    ab: Registry, demo_fleet: Fleet
) -> None:
    exp = ab.ab_experiment(MODEL, 2)
    assert exp is not None and exp.live
    start = exp.started_at.timestamp()
    prod = _log_users(start, 1, "prod", 1200, 0.20, seed=1)
    cand = _log_users(start, 2, "ab", 1200, 0.24, seed=2)
    md = _report(ab, demo_fleet, start + HOUR, looks=6)

    table = md["lift_per_look"].records  # type: ignore[attr-defined]
    overall = [r.data for r in table if r.data["arm"] == "v2 vs prod"]
    assert len(overall) == 6
    # Every look holds exactly the users logged before it: the windows are cumulative.
    for t, row in zip(look_times(start, start + HOUR, 6), overall, strict=True):
        c = _stats([r for r in cand if r[0] < t])
        p = _stats([r for r in prod if r[0] < t])
        d = ABEngine().decide(c, p, split=0.5)
        if d.test.lift is None:
            assert row["lift"] is None
        else:
            assert row["lift"] == pytest.approx(d.test.lift, abs=1e-5)
    # At the last look, the interval is the one the engine reports with the plan's policy.
    policy = ABPolicy(
        mde=abs(exp.plan["relative_mde"]), alpha=exp.plan["alpha"] / 2, power=exp.plan["power"]
    )
    d = ABEngine(policy).decide(_stats(cand), _stats(prod), split=0.5)
    last = overall[-1]
    assert d.test.lift_low is not None and d.test.lift_high is not None
    assert (last["lower"], last["lift"], last["upper"]) == pytest.approx(
        (d.test.lift_low, d.test.lift, d.test.lift_high), abs=1e-5
    )
    assert last["lower"] < 0.2 < last["upper"]  # the true lift, +20%, is covered
    # One arm per protected segment, each with that segment's users only.
    arms = {r.data["arm"] for r in table}
    assert arms == {"v2 vs prod", *(f"v2 vs prod, segment {s}" for s in SEGMENTS)}
    de = [r.data for r in table if r.data["arm"] == "v2 vs prod, segment de"][-1]
    want = ABEngine().decide(
        _stats([r for r in cand if r[1] == "de"]),
        _stats([r for r in prod if r[1] == "de"]),
        split=0.5,
    )
    assert de["lift"] == pytest.approx(want.test.lift, abs=1e-5)
    for arm in arms:
        assert f"lift_chart/{arm}" in md
    # The plan against what the test has.
    assert md["users_needed_candidate"] == exp.plan["n_candidate"]
    assert (md["users_candidate"], md["users_prod"]) == (1200, 1200)
    plan = md["plan"].value  # type: ignore[attr-defined]
    assert f"{exp.plan['n_candidate']:,.0f} | 1,200 |" in plan


def test_a_finished_ab_is_drawn_up_to_when_it_ended(ab: Registry, demo_fleet: Fleet) -> None:
    exp = ab.ab_experiment(MODEL, 2)
    assert exp is not None
    ab.transition(MODEL, 2, State.ROLLED_BACK, actor="ops", reason="test")
    ended = ab.ab_experiment(MODEL, 2)
    assert ended is not None and not ended.live
    left = [c.ts for c in ab.get_version(MODEL, 2).state_history if c.state is State.ROLLED_BACK]
    span = left[-1].timestamp() - exp.started_at.timestamp()
    md = _report(ab, demo_fleet, exp.started_at.timestamp() + 30 * 86400, looks=4)
    assert md["live"] is False
    looks = [r.data["look"] for r in md["lift_per_look"].records]  # type: ignore[attr-defined]
    assert looks[-1] == f"+{span / 60:.0f} min"  # not thirty days: the test had ended
    assert all(r.data["lift"] is None for r in md["lift_per_look"].records)  # type: ignore[attr-defined]


def test_no_ab_test_says_so_and_the_fleet_defs_hold_the_asset(
    home: Path, demo_fleet: Fleet
) -> None:
    reg = Registry()
    reg.add_team(demo_fleet.model(MODEL).spec.owner_team)
    reg.create_model(demo_fleet.model(MODEL).spec)
    assert _report(reg, demo_fleet, 0.0) == {"status": "no A/B test to draw"}
    defs = build_online_report_defs(demo_fleet)
    keys = {k for a in defs.assets or [] for k in a.keys}  # type: ignore[union-attr]
    assert ab_report_key(demo_fleet.model(MODEL)) in keys
    asset = build_ab_report_asset(demo_fleet, demo_fleet.model(MODEL))
    result = dg.materialize(
        [asset], resources={"registry": RegistryResource(), "predlog": PredictionLogResource()}
    )
    assert result.success
