"""How a sensor launches: the core's plain run fields become a `dg.RunRequest`, and the jobs
it may launch are the very objects `definitions.py` hands over.

Sensors never import `jobs`: the job definitions arrive as a mapping from action kind to job,
so sensors, jobs and assets stay peers that only share the core's vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg

from modelops.actions import JOB_NAMES, ActionKind, ActionRequest, action_run_fields

__all__ = ["ActionJobs", "action_run_request", "jobs_for"]

ActionJobs = Mapping[ActionKind, dg.JobDefinition]
"""The action jobs a sensor may launch, keyed by what they do (`jobs.ACTION_JOBS`)."""


def action_run_request(
    kind: ActionKind, req: ActionRequest, *, run_key: str | None = None
) -> dg.RunRequest:
    return dg.RunRequest(**action_run_fields(kind, req, run_key=run_key))


def jobs_for(jobs: ActionJobs, kinds: Iterable[ActionKind], sensor: str) -> list[dg.JobDefinition]:
    """The sensor's targets, checked at load time: a missing or misnamed job would otherwise
    surface only when a tick first tries to launch it."""
    out: list[dg.JobDefinition] = []
    for kind in kinds:
        job = jobs.get(kind)
        if job is None:
            raise ValueError(
                f"{sensor} launches {kind.value} but no job was given for it; pass "
                f"jobs={{ActionKind.{kind.name}: <the {JOB_NAMES[kind]} job>, ...}} "
                "(definitions.py hands over jobs.ACTION_JOBS)"
            )
        if job.name != JOB_NAMES[kind]:
            raise ValueError(
                f"{sensor}: the job given for {kind.value} is named {job.name!r}; "
                f"its run requests name {JOB_NAMES[kind]!r}"
            )
        out.append(job)
    return out
