"""The evaluation pictures render where people look: a real `dagster-webserver` shows the
shadow report's divergence per slice, the drift report's drift per feature and the A/B
report's lift with its confidence sequence per arm and its plan (tables and charts in the
assets' metadata), and a headless browser draws them (screenshots kept under
tests/artifacts/).

The materializations carry metadata built by the report code from real engine output over
seeded data; they are recorded in the webserver's instance before it starts, so the test
needs no registry, log or run.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from assets.ab_reports import ABLook, ab_policy_of_plan, ab_report_metadata
from assets.drift_reports import drift_feature_table, drift_markdown
from assets.shadow_reports import divergence_markdown, divergence_table
from demo.instance import write_instance_yaml
from demo.procs import REPO_ROOT, Stack
from modelops.evaluation.drift import build_reference, drift_report
from modelops.evaluation.ratio import ArmStats
from modelops.evaluation.shadow import SHADOW_CAVEAT, shadow_divergence

pytestmark = [pytest.mark.xdist_group("dagster_procs"), pytest.mark.timeout(240)]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
MODEL = "ctr_gbdt"


def _drift_metadata() -> dict[str, object]:
    rng = np.random.default_rng(11)
    ref = build_reference({f"f{i}": rng.normal(size=5000) for i in range(4)})
    cur = {f"f{i}": rng.normal(size=3000) for i in range(4)}
    cur["f1"] = cur["f1"] + 0.8  # one feature moved
    slices = np.array(["us", "de", "br"])[rng.integers(0, 3, size=3000)]
    report = drift_report(ref, cur, slices=slices)
    return {
        "drift_per_feature": drift_feature_table(report),
        "drift_chart": dg.MetadataValue.md(drift_markdown(report, 0.2, f"{MODEL} v1")),
    }


def _shadow_metadata() -> dict[str, object]:
    rng = np.random.default_rng(12)
    n = 6000
    logit = rng.normal(-1, 1, size=n)
    slices = np.array(["us", "de", "br"])[rng.integers(0, 3, size=n)]
    shift = np.where(slices == "br", 1.2, 0.0)  # the shadow diverges on one slice only
    prod = 1 / (1 + np.exp(-logit))
    shadow = 1 / (1 + np.exp(-(logit + shift)))
    report = shadow_divergence(prod, shadow, slices=slices)
    return {
        "divergence_per_slice": divergence_table(report),
        "divergence_chart": dg.MetadataValue.md(divergence_markdown(report, 0.15, f"{MODEL} v2")),
        "caveat": SHADOW_CAVEAT,
    }


def _ab_metadata() -> dict[str, object]:
    """The A/B report's metadata over seeded users: prod at 20% clicks per request, the
    candidate +8% overall and on segment us, the same as prod on segment de; looks by day."""
    rng = np.random.default_rng(13)

    def arm(users: int, rate: float) -> ArmStats:
        n = rng.integers(1, 6, size=users).astype(float)
        p = rng.beta(10 * rate, 10 * (1 - rate), size=users)
        return ArmStats.from_users(rng.binomial(n.astype(int), p).astype(float), n)

    looks = []
    empty = ArmStats(n_users=0)
    us, de = (empty, empty), (empty, empty)
    for day in range(1, 8):  # each day's new users join the running totals
        us = (us[0] + arm(3000, 0.216), us[1] + arm(3000, 0.2))
        de = (de[0] + arm(3000, 0.2), de[1] + arm(3000, 0.2))
        c, p = us[0] + de[0], us[1] + de[1]
        looks.append(ABLook(f"day {day}", c, p, {"us": us, "de": de}))
    plan = {
        "relative_mde": 0.05,
        "alpha": 0.05,
        "power": 0.8,
        "n_candidate": 60_000,
        "n_prod": 60_000,
        "planned_days": 7,
        "daily_users": 12_000,
    }
    policy = ab_policy_of_plan(plan, higher_is_better=True)
    return ab_report_metadata(looks, plan, policy, version=2, title=f"{MODEL} v2")


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("screenshots-home")
    dagster_home = write_instance_yaml(home)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for key, metadata in (
            (["drift_reports", MODEL], _drift_metadata()),
            (["shadow_reports", MODEL], _shadow_metadata()),
            (["ab_reports", MODEL], _ab_metadata()),
        ):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=key, metadata=metadata)  # type: ignore[arg-type]
            )
    stack = Stack(home, fleet_file=REPO_ROOT / "demo" / "fleet.yaml")
    try:
        stack.start_webserver(timeout=120)
        yield stack
    finally:
        stack.stop()


def _chromium(url: str, profile: Path, screenshot: Path) -> str:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.fail(f"chromium is required for the report screenshots; not found at {CHROMIUM}")
    binary = str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))
    cmd = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions",
        "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1600,2400",
        "--virtual-time-budget=20000", "--dump-dom", f"--screenshot={screenshot}", url,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=150, check=False)
    assert proc.returncode == 0, f"chromium exit {proc.returncode}: {proc.stderr[-2000:]}"
    return proc.stdout


def _painted(shot: Path) -> None:
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{shot} is not a PNG"
    assert struct.unpack(">II", head[16:24]) == (1600, 2400)
    assert shot.stat().st_size > 30_000, f"{shot} is suspiciously small"


@pytest.mark.parametrize(
    ("key", "expect"),
    [
        # drift per feature: the table's columns and the moved feature, the chart's bars
        (("drift_reports", MODEL), ["drift_per_feature", "js_distance", "f1", "DRIFT", "█"]),
        # divergence per slice: the table, every slice, the verdict and the caveat
        (
            ("shadow_reports", MODEL),
            ["divergence_per_slice", "kl_prod_shadow", "br", "de", "us", "FAIL", "█"],
        ),
        # the A/B lift with its confidence sequence per arm over the looks, and the plan
        (
            ("ab_reports", MODEL),
            [
                "lift_per_look",
                "v2 vs prod",
                "v2 vs prod, segment us",
                "v2 vs prod, segment de",
                "day 7",
                "●",
                "users, candidate arm",
                "60,000",
            ],
        ),
    ],
)
def test_report_metadata_renders(
    webserver: Stack, tmp_path: Path, key: tuple[str, str], expect: list[str]
) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{key[0]}_{key[1]}.png"
    shot.unlink(missing_ok=True)
    url = f"http://127.0.0.1:{webserver.webserver_port}/assets/{key[0]}/{key[1]}?view=events"
    dom = _chromium(url, tmp_path / "profile", shot)
    _painted(shot)
    missing = [text for text in expect if text not in dom]
    assert not missing, f"{'/'.join(key)} page does not show {missing}"
