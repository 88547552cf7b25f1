"""The simulator the error-rate tests and the benchmark stand on, and the package's import
hygiene (the core imports no Dagster, database, serving client or scipy at load)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelops.evaluation import log_ratio_difference
from modelops.evaluation.simulate import ClickModel

PACKAGE = Path(__file__).resolve().parents[2] / "modelops" / "evaluation"


def test_exact_moments_match_monte_carlo() -> None:
    """2M simulated users per effect: each moment within 5 Monte Carlo standard errors."""
    m = ClickModel()
    rng = np.random.default_rng(81)
    for effect in (0.0, -0.1, 0.02):
        mom = m.user_moments(effect)
        x, y = m.users(rng, 2_000_000, effect)
        v = np.stack([x, y, x * x, y * y, x * y])
        se = v.std(axis=1) / np.sqrt(v.shape[1])
        assert np.all(np.abs(v.mean(axis=1) - mom.mean) <= 5 * se)
        np.testing.assert_allclose(np.cov(v), mom.cov, rtol=0.03)


def test_normal_limit_sums_behave_like_user_draws() -> None:
    """The benchmark's shortcut for big arms: the log-ratio between two arms of 2,000 users
    has the same mean and spread whether drawn user by user or from the normal limit
    (2,000 replicates each; the variance ratio's 95% band at that size is about +-9%)."""
    m = ClickModel()
    rng = np.random.default_rng(82)
    counts = np.full(2000, 2000)
    mom = m.user_moments()
    th_u, _ = log_ratio_difference(m.arm_sums(rng, counts), m.arm_sums(rng, counts))
    th_c, _ = log_ratio_difference(m.clt_sums(rng, counts, mom), m.clt_sums(rng, counts, mom))
    assert abs(th_u.mean() - th_c.mean()) < 4 * th_u.std() / np.sqrt(2000) * np.sqrt(2)
    assert th_c.var() / th_u.var() == pytest.approx(1.0, abs=0.12)


def test_effect_moves_the_rate_by_that_fraction() -> None:
    m = ClickModel()
    assert m.user_moments(-0.1).mean[0] / m.user_moments().mean[0] == pytest.approx(0.9)
    assert m.users_per_tick == pytest.approx(1_000_000 / 288)


ALLOWED = {"numpy", "scipy", "pydantic", "modelops", "__future__", "math", "hashlib",
           "statistics", "collections", "enum", "typing", "dataclasses"}
# The core's vocabulary modules: plain records and enums with no store, clock or client.
# The evaluation package may speak them (an ActionKind, a State, a WindowStats), nothing else.
VOCABULARY = {"modelops.actions", "modelops.errors", "modelops.evidence", "modelops.fleet",
              "modelops.spec"}


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_the_package_imports_only_numeric_libraries(path: Path) -> None:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
            if node.module.split(".")[0] == "modelops":
                assert (
                    node.module.startswith("modelops.evaluation") or node.module in VOCABULARY
                ), node.module
    assert found <= ALLOWED, found - ALLOWED


def test_importing_the_package_loads_no_dagster_database_or_scipy() -> None:
    """A sensor's code location imports this; scipy loads on the first evaluation only."""
    code = (
        "import sys, modelops.evaluation; "
        "print(sorted(m for m in ('dagster', 'sqlalchemy', 'scipy', 'serving', 'pandas') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
