"""The code location `dagster dev`, `dg dev` and the daemon load (see workspace.yaml).

It reads the fleet declaration named by $MODELOPS_FLEET (default: the demo fleet) and builds
every definition from it. Assets, jobs and sensors are peers that import none of each other;
here the action jobs are handed to the sensor builders, which target those very objects.
Loading does no network I/O and imports no heavy library: a code server restart, and each
run's process start, stay fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets import build_fleet_defs, build_online_report_defs
from jobs import ACTION_JOBS, build_job_defs
from modelops.fleet import load_fleet
from resources import default_resources
from sensors import build_sensor_defs
from sensors.feature_drift import build_feature_drift_sensor
from sensors.shadow_divergence import build_shadow_divergence_sensor

FLEET_FILE = Path(os.environ.get("MODELOPS_FLEET") or Path(__file__).parent / "demo" / "fleet.yaml")


def build_definitions(fleet_file: Path = FLEET_FILE) -> dg.Definitions:
    fleet = load_fleet(fleet_file)
    return dg.Definitions.merge(
        build_fleet_defs(fleet),
        build_online_report_defs(fleet),
        build_job_defs(fleet),
        build_sensor_defs(fleet, jobs=ACTION_JOBS),
        dg.Definitions(  # the shadow verdict (SHADOW -> FAILED) and the drift alerts
            sensors=[
                build_shadow_divergence_sensor(fleet, jobs=ACTION_JOBS),
                build_feature_drift_sensor(fleet),
            ]
        ),
        dg.Definitions(resources=default_resources(), executor=dg.in_process_executor),
    )


defs = build_definitions()
