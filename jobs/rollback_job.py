"""The rollback action's body: the whole rollback run, and its report as an asset.

The rollback job does more than the registry transition: it runs
`modelops.rollback.run_rollback` (plan, snapshot check, registry rollback, the controller
pass as the timed cutover, state restores, dependents, report), then materializes the
report as `rollback_reports/<id>` (markdown and JSON in the metadata, both also stored
content-addressed in the artifact store) and observes NEEDS_RETRAIN on every dependent
it marked, so the mark shows on that model's asset page.

Rollbacks are never gated by state: a store whose snapshot does not verify is left
untouched while traffic goes back regardless; the report is still materialized, then the
run fails with the refusal's one line, so the rollback failure sensor raises the alert.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dagster as dg

from modelops.actions import ActionRequest
from modelops.errors import ModelopsError

if TYPE_CHECKING:
    from modelops.artifacts import ArtifactStore
    from modelops.registry import Registry
    from modelops.rollback import RollbackReport

__all__ = ["REPORTS_PREFIX", "rollback_run_events", "report_events", "rollback_extra"]

REPORTS_PREFIX = "rollback_reports"


def rollback_extra(report: RollbackReport) -> dict[str, Any]:
    """What the model's observation adds after a rollback run."""
    extra: dict[str, Any] = {
        "rollback_report": f"{REPORTS_PREFIX}/{report.id}",
        "writes_reverted": report.writes_reverted,
    }
    if report.cutover.restored_version is not None:
        extra["restored_version"] = report.cutover.restored_version
    return extra


def report_events(report: RollbackReport, store: ArtifactStore) -> list[Any]:
    """The report's materialization and one NEEDS_RETRAIN observation per marked model."""
    doc = report.document()
    md = report.markdown()
    md_ref = store.put_bytes(md.encode())
    json_ref = store.put_bytes(json.dumps(doc, sort_keys=True, indent=1).encode())
    meta: dict[str, Any] = {
        "report": dg.MetadataValue.md(md),
        "report_json": dg.MetadataValue.json(doc),
        "markdown_uri": md_ref.uri,
        "json_uri": json_ref.uri,
        "model_id": report.model_id,
        "version": report.version,
        "slice": report.slice,
        "rollback_class": report.rollback_class,
        "restored_version": report.cutover.restored_version
        if report.cutover.restored_version is not None
        else "-",
        "cutover_s": report.cutover.total_s,
        "writes_reverted": report.writes_reverted,
        "needs_retrain": ", ".join(d["model_id"] for d in report.needs_retrain) or "-",
        "contaminated_features": ", ".join(f["feature"] for f in report.contaminated_features)
        or "-",
        "report_sha256": doc["sha256"],
        "restore_refused": "; ".join(r.line for r in report.refused) or "-",
    }
    events: list[Any] = [
        dg.AssetMaterialization(
            asset_key=dg.AssetKey([REPORTS_PREFIX, report.id]),
            description=f"rollback of {report.model_id}@{report.version} on {report.slice!r}",
            metadata=meta,
        )
    ]
    for d in report.needs_retrain:
        events.append(
            dg.AssetObservation(
                asset_key=dg.AssetKey(["models", d["model_id"]]),
                metadata={
                    "needs_retrain": dg.MetadataValue.text(
                        f"NEEDS_RETRAIN since the rollback of {report.model_id}@"
                        f"{report.version} ({d['note']}); a newly registered version clears it"
                    ),
                    "rollback_report": f"{REPORTS_PREFIX}/{report.id}",
                },
            )
        )
    return events


def rollback_run_events(
    context: dg.OpExecutionContext,
    req: ActionRequest,
    registry: Registry,
    store: ArtifactStore,
    cutover: Callable[[], Any],
    *,
    cascade: bool = False,
    approvals: list[str] | None = None,
) -> tuple[RollbackReport, list[Any]]:
    """Run the rollback; a refusal fails the run with its one line (nothing partial). A
    refused restore fails it too, after the cutover, with the report materialized first."""
    from modelops.rollback import RestoreRefused, run_rollback

    def hook(step: str) -> None:
        context.log.info(f"rollback: {step}")

    try:
        report = run_rollback(
            registry,
            store,
            req.model_id,
            req.version,
            actor=req.actor,
            slice=req.slice,
            expected=req.expected,
            reason=req.reason,
            automated=req.automated,
            cascade=cascade,
            approvals=approvals or [],
            cutover=cutover,
            hook=hook,
        )
    except RestoreRefused as exc:
        line = " ".join(str(exc).split())
        # A failing op's logged events are dropped with it, so the report and the marks
        # are recorded on the instance directly: the asset pages show them all the same.
        for ev in report_events(exc.report, store):
            context.instance.report_runless_asset_event(ev)
        context.log.error(line)
        raise dg.Failure(
            description=line,
            metadata={
                "model_id": req.model_id,
                "version": req.version,
                "slice": req.slice,
                "error": type(exc).__name__,
                "restored_version": exc.report.cutover.restored_version
                if exc.report.cutover.restored_version is not None
                else "-",
                "restore_refused": ", ".join(
                    f"{r.owner_model}/{r.store}" for r in exc.report.refused
                ),
                "rollback_report": f"{REPORTS_PREFIX}/{exc.report.id}",
                "report": dg.MetadataValue.md(exc.report.markdown()),
            },
            allow_retries=False,
        ) from None
    except ModelopsError as exc:
        line = " ".join(str(exc).split())
        context.log.error(f"rollback {req.model_id}@{req.version} refused: {line}")
        raise dg.Failure(
            description=line,
            metadata={
                "model_id": req.model_id,
                "version": req.version,
                "slice": req.slice,
                "error": type(exc).__name__,
            },
            allow_retries=False,
        ) from None
    cut = report.cutover
    context.log.info(
        f"registry: {report.model_id}@{report.version} {cut.from_state} -> ROLLED_BACK on "
        f"{report.slice!r} (run {report.run_id}, cutover {cut.total_s} s)"
    )
    if cut.restored_version is not None:
        context.log.info(f"registry: v{cut.restored_version} restored to PROMOTED")
    for s in (*report.state, *report.downstream_state):
        context.log.info(
            f"restored {s.owner_model}/{s.store}: {s.writes_after_cursor} writes after the "
            f"snapshot reverted ({s.mode})"
        )
    for c in report.caveats:
        context.log.warning(f"rollback caveat: {c}")
    return report, report_events(report, store)
