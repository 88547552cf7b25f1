"""End to end with the real daemon: `python -m demo.run --models ctr_gbdt --no-refresh`.

Triton, the gateway, the webserver and `dagster-daemon` all run for real; the sensors drive
the bootstrap promotion, then a regressed v2 through shadow into canary, where the
online-metrics sensor rolls it back. (`make demo` runs the refresh phase too; skipping it
here keeps the test near 2 minutes.) The test reads the registry and the Dagster instance
the demo left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from demo.procs import REPO_ROOT
from modelops.registry import Registry

pytestmark = [pytest.mark.xdist_group("dagster_procs"), pytest.mark.timeout(420)]
TIME_TO_RECOVER_TARGET_S = 60.0  # as bench/plugin.py's target


def test_demo_rolls_back_a_regressed_canary(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    env = dict(os.environ)
    for var in ("MODELOPS_REGISTRY_URL", "MODELOPS_PREDLOG_URL", "MODELOPS_ARTIFACTS"):
        env.pop(var, None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo.run",
            "--models",
            "ctr_gbdt",
            "--no-refresh",
            "--home",
            str(home),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "phase 3" in out and "ROLLED_BACK" in out

    result = json.loads((home / "demo-result.json").read_text())
    reg_info = result["regressed"]
    good, bad = reg_info["good_version"], reg_info["bad_version"]
    assert (good, bad) == (1, 2)
    # The product's target, from the first bad response to 100% of traffic back on prod.
    ttr = reg_info["time_to_recover_s"]
    assert ttr is not None, "the regressed version never served a request"
    assert ttr <= TIME_TO_RECOVER_TARGET_S, f"time to recover {ttr}s > {TIME_TO_RECOVER_TARGET_S}s"

    reg = Registry(f"sqlite:///{home / 'registry.db'}")
    try:
        # prod is the last good version; the regressed one is rolled back, by the sensor.
        assert reg.desired_state("ctr_gbdt").prod_version == good
        assert reg.state_of("ctr_gbdt", good).value == "PROMOTED"
        assert reg.state_of("ctr_gbdt", bad).value == "ROLLED_BACK"
        rollbacks = [
            e
            for e in reg.audit_entries("ctr_gbdt")
            if e.version == bad and e.payload.get("to") == "ROLLED_BACK"
        ]
        assert len(rollbacks) == 1  # one breach, one rollback
        assert rollbacks[0].payload["automated"] is True
    finally:
        reg.close()

    # The gateway's table for ctr_gbdt has no candidate left, and prod answers.
    table = reg_info["gateway_table"]
    assert table["prod"]["version"] == good
    assert table.get("canary") is None

    instance = dg.DagsterInstance.from_config(str(home / "dagster"))
    try:
        runs = instance.get_runs(dg.RunsFilter(job_name="modelops_rollback"))
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS]
        assert runs[0].tags.get("dagster/sensor_name") == "modelops_online_metrics_sensor"
        assert runs[0].tags.get("modelops/lock") == "ctr_gbdt/global"
        # Every promotion step was a run the daemon launched, and each succeeded.
        steps = instance.get_runs(dg.RunsFilter(job_name="modelops_canary_step"))
        assert steps and all(r.status is dg.DagsterRunStatus.SUCCESS for r in steps)
    finally:
        instance.dispose()
