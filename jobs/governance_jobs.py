"""Governance as Dagster jobs: break-glass, the chain-head anchors and the ticket outbox.

The break-glass job carries statements signed elsewhere (`modelops sign-break-glass`): a run's
config is visible in the UI and its logs, so it holds signatures, never a private key. The
anchor schedule signs every audit chain head with the service key, which the registry
resource reads from `dg.EnvVar("MODELOPS_SERVICE_KEY")`; the outbox schedule POSTs due
postmortem tickets to `MODELOPS_TICKET_WEBHOOK`, retrying with backoff.
"""


import os

import dagster as dg

from resources import ArtifactStoreResource, RegistryResource

__all__ = [
    "BreakGlassConfig",
    "break_glass_job",
    "anchor_job",
    "outbox_job",
    "governance_defs",
]


class BreakGlassConfig(dg.Config):
    """The signed request and the two senior approvals, each a statement's JSON."""

    model_id: str
    version: int
    slice: str = "global"
    request: str
    approvals: list[str]


@dg.op
def break_glass_op(
    context: dg.OpExecutionContext, config: BreakGlassConfig, registry: RegistryResource
) -> int:
    res = registry.get().break_glass(
        config.model_id,
        config.version,
        statement=config.request,
        approvals=config.approvals,
        slice=config.slice,
    )
    context.log.warning(
        f"BREAK-GLASS {res.model_id}@{res.version} PROMOTED on {res.slice}, approved by "
        f"{', '.join(res.approvers)}; heightened monitoring until "
        f"{res.heightened_until.isoformat()}; postmortem ticket #{res.ticket_id}"
    )
    return res.ticket_id


@dg.job(tags={"modelops/action": "break_glass"})
def break_glass_job() -> None:
    break_glass_op()


@dg.op
def anchor_op(registry: RegistryResource, artifacts: ArtifactStoreResource) -> str:
    return str(registry.anchor_heads(artifacts.get()).sha256)


@dg.job
def anchor_job() -> None:
    anchor_op()


@dg.op
def outbox_op(context: dg.OpExecutionContext, registry: RegistryResource) -> int:
    url = os.environ.get("MODELOPS_TICKET_WEBHOOK")
    if not url:
        context.log.info("MODELOPS_TICKET_WEBHOOK is not set: tickets wait in the outbox")
        return 0
    delivered, pending = registry.get().deliver_outbox(url)
    context.log.info(f"outbox: {delivered} delivered, {pending} pending")
    return pending


@dg.job
def outbox_job() -> None:
    outbox_op()


def governance_defs() -> dg.Definitions:
    """The jobs, an hourly anchor schedule (running when a service key is configured) and
    a five-minute outbox schedule (running when a webhook is)."""
    running, stopped = dg.DefaultScheduleStatus.RUNNING, dg.DefaultScheduleStatus.STOPPED
    return dg.Definitions(
        jobs=[break_glass_job, anchor_job, outbox_job],
        schedules=[
            dg.ScheduleDefinition(
                name="anchor_chain_heads",
                job=anchor_job,
                cron_schedule="0 * * * *",
                default_status=running if os.environ.get("MODELOPS_SERVICE_KEY") else stopped,
            ),
            dg.ScheduleDefinition(
                name="deliver_tickets",
                job=outbox_job,
                cron_schedule="*/5 * * * *",
                default_status=running if os.environ.get("MODELOPS_TICKET_WEBHOOK") else stopped,
            ),
        ],
    )
