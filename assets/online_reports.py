"""The online evaluation reports of a fleet as one Definitions: per model a
`shadow_reports/<model>`, a `drift_reports/<model>` and an `ab_reports/<model>` asset, and
the hourly shadow replay schedule. `definitions.py` merges it with the fleet's other
assets, jobs and sensors."""

from __future__ import annotations

import dagster as dg

from assets.ab_reports import build_ab_report_asset
from assets.compliance_docs import build_compliance_docs_asset
from assets.drift_reports import build_drift_report_asset
from assets.shadow_reports import build_shadow_replay_schedule, build_shadow_report_asset
from modelops.fleet import Fleet

__all__ = ["build_online_report_defs"]


def build_online_report_defs(fleet: Fleet) -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    for decl in fleet.models:
        assets.append(build_shadow_report_asset(fleet, decl))
        assets.append(build_drift_report_asset(fleet, decl))
        assets.append(build_ab_report_asset(fleet, decl))
        assets.append(build_compliance_docs_asset(fleet, decl))  # Article 11 document
    job, schedule = build_shadow_replay_schedule(fleet)
    return dg.Definitions(assets=assets, jobs=[job], schedules=[schedule])
