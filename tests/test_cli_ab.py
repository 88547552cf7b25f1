"""`modelops ab plan`, `modelops ab layer` and the A/B part of `modelops show MODEL@V`."""

from __future__ import annotations

import contextlib
import io
import json
import shlex

import pytest
from test_registry_ab_contract import candidate_at_canary

from modelops.cli import main
from modelops.registry import Registry
from modelops.spec import State


def run(cmd: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(shlex.split(cmd))
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def test_ab_plan_gives_the_seed_example() -> None:
    """About 3M users per arm for a 1% relative lift on a 5% baseline, about 6 days at 1M
    users a day split 50/50."""
    code, out, err = run("ab plan --baseline 0.05 --relative-mde 0.01 --daily-users 1000000")
    assert code == 0 and err == ""
    assert "candidate 2,996,681   prod 2,996,681" in out
    assert "6.0 at 1,000,000 users a day" in out
    code, out, _ = run("ab plan --baseline 0.05 --relative-mde 0.01 --daily-users 1000000 --json")
    plan = json.loads(out)
    assert 2.9e6 < plan["treatment_users"] < 3.1e6
    assert plan["days"] == pytest.approx(6.0, abs=0.1)


@pytest.mark.parametrize(
    "args",
    [
        "--baseline 0.05 --relative-mde 0.01",
        "--baseline 0.05 --relative-mde 0.01 --split 0.3 --alpha 0.01 --power 0.9",
        "--baseline 0.2 --relative-mde -0.05 --split 0.7",
        "--baseline 0.01 --relative-mde 0.1 --power 0.95",
    ],
)
def test_ab_plan_agrees_with_statsmodels_within_one_percent(args: str) -> None:
    """statsmodels solves the power equation for two proportions on Cohen's h numerically
    (NormalIndPower with proportion_effectsize; ratio = prod / candidate users)."""
    from statsmodels.stats.power import NormalIndPower
    from statsmodels.stats.proportion import proportion_effectsize

    code, out, _ = run(f"ab plan {args} --json")
    assert code == 0
    p = json.loads(out)
    h = proportion_effectsize(p["baseline"] * (1 + p["relative_mde"]), p["baseline"])
    n_t = NormalIndPower().solve_power(
        effect_size=abs(h), alpha=p["alpha"], power=p["power"], ratio=(1 - p["split"]) / p["split"]
    )
    assert p["treatment_users"] == pytest.approx(n_t, rel=0.01)
    assert p["control_users"] == pytest.approx(n_t * (1 - p["split"]) / p["split"], rel=0.01)


@pytest.mark.parametrize(
    "args,needle",
    [
        ("--baseline 1.5 --relative-mde 0.01", "--baseline 1.5: out of range"),
        ("--baseline 0.05 --relative-mde 0", "--relative-mde 0: allowed"),
        ("--baseline 0.05 --relative-mde 0.01 --split 1", "--split 1: out of range"),
        ("--baseline 0.05 --relative-mde 0.01 --power 1.2", "--power 1.2: out of range"),
        ("--baseline 0.05 --relative-mde 0.01 --daily-users 0", "--daily-users 0: out of range"),
        ("--baseline 0.9 --relative-mde 0.2", "keep the treatment rate in (0, 1)"),
    ],
)
def test_ab_plan_bad_input_is_one_line(args: str, needle: str) -> None:
    code, out, err = run(f"ab plan {args}")
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_show_and_layer_expose_the_recorded_plan(registry: Registry) -> None:
    v = candidate_at_canary(registry, layer_share=40)
    registry.transition("ranker", v, State.AB_TEST, actor="ops", percent=20, layer="home")
    url = registry.url
    code, out, _ = run(f"--registry {url} show ranker@{v}")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("  ab[global]"))
    plan = registry.ab_experiment("ranker", v).plan  # type: ignore[union-attr]
    assert "running" in line and "layer home share 40% split 50%" in line
    assert f"{plan['n_candidate']:,} / {plan['n_prod']:,} users per arm" in line
    code, out, _ = run(f"--registry {url} show ranker@{v} --json")
    assert json.loads(out)["ab_experiments"][0]["plan"] == plan

    code, out, _ = run(f"--registry {url} ab layer home")
    assert code == 0 and "40% of 100% held" in out and "ranker@2 slice global (40%)" in out
    before = registry.row_counts()
    code, _, err = run(f"--registry {url} ab layer home --capacity 30 --actor ops")
    assert code == 1 and "allowed: at least 40%" in err and err.count("\n") == 1
    assert registry.row_counts() == before
    code, out, _ = run(f"--registry {url} ab layer home --capacity 60 --actor ops")
    assert code == 0 and "40% of 60% held" in out
