"""Weight refresh: one asset job per model, and a schedule per model that declares a cron.

The job materializes the model asset (with its blocking gate checks) and its eval report.
The model asset always trains on the newest dataset snapshot, so a scheduled run is a weight
refresh on an unchanged contract; the candidate sensor then takes the automated path. The
selection is by asset key, so this module does not import the asset factories.
"""

from __future__ import annotations

import dagster as dg

from modelops.actions import KIND_TAG, MODEL_TAG
from modelops.fleet import Fleet, ModelDecl

__all__ = [
    "REFRESH_KIND",
    "refresh_job_name",
    "refresh_schedule_name",
    "refresh_job",
    "refresh_defs",
]

REFRESH_KIND = "refresh"


def refresh_job_name(model_id: str) -> str:
    return f"refresh_{model_id}"


def refresh_schedule_name(model_id: str) -> str:
    return f"refresh_{model_id}_schedule"


def refresh_job(decl: ModelDecl) -> dg.UnresolvedAssetJobDefinition:
    """Retrain one model on its newest snapshot; its gate checks run with it."""
    mid = decl.model_id
    return dg.define_asset_job(
        name=refresh_job_name(mid),
        selection=dg.AssetSelection.assets(["models", mid], ["eval_reports", mid]),
        description=f"weight refresh of {mid}: retrain on the newest {decl.dataset} snapshot, "
        "run the offline gates, write the eval report",
        tags={MODEL_TAG: mid, KIND_TAG: REFRESH_KIND},
        executor_def=dg.in_process_executor,
    )


def refresh_defs(
    fleet: Fleet,
) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]:
    """Jobs for every model; schedules for those with `refresh_cron`."""
    jobs: list[dg.UnresolvedAssetJobDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    for decl in fleet.models:
        job = refresh_job(decl)
        jobs.append(job)
        if decl.refresh_cron:
            schedules.append(
                dg.ScheduleDefinition(
                    name=refresh_schedule_name(decl.model_id),
                    job=job,
                    cron_schedule=decl.refresh_cron.strip(),
                    default_status=dg.DefaultScheduleStatus.RUNNING,
                    tags={MODEL_TAG: decl.model_id, KIND_TAG: REFRESH_KIND},
                    description=f"weight refresh of {decl.model_id} on {decl.refresh_cron}",
                )
            )
    return jobs, schedules
