"""What rollbacks need recorded: snapshots taken on the way in, restores done on the way back.

- A transition into CANARY or AB_TEST that carries snapshots records them (one
  `state_snapshots` row per snapshotted model, the version's `rollback_snapshot_uri`, and
  the transition's own audit entry) in the transition's transaction, so a version never
  enters those states without its snapshot on record.
- A rollback run records each store as it is restored (`rollback_runs.progress_json`), so a
  rerun after a kill restores only what it had not, and never a store twice.
- Finishing a run writes its report, NEEDS_RETRAIN marks, contaminated features and decay
  window in one transaction with one audit entry: all of it or none.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, insert, select, update

from modelops.errors import ConflictError, NotFoundError, SpecError
from modelops.spec import DEFAULT_SLICE, ShadowMode, State
from modelops.store import db
from modelops.store.tables import (
    contaminated_features,
    contract_features,
    decay_windows,
    dependencies,
    model_versions,
    models,
    retrain_marks,
    rollback_runs,
    state_snapshots,
)

from .checks import parse_state
from .records import TransitionResult, canonical, parse_ts
from .transitions import TransitionOps

__all__ = [
    "SNAPSHOT_TARGETS",
    "TakenSnapshot",
    "SnapshotRecord",
    "RollbackRunRecord",
    "RetrainMark",
    "ContaminatedFeature",
    "DecayWindow",
    "RollbackStateOps",
]

SNAPSHOT_TARGETS = (State.CANARY, State.AB_TEST)


class TakenSnapshot(BaseModel):
    """A snapshot already in the artifact store, to be recorded with a transition."""

    owner_model: str
    sha256: str
    uri: str
    stores: dict[str, str] = Field(description="store name -> content sha256")


class SnapshotRecord(TakenSnapshot):
    id: int
    model_id: str
    version: int
    slice: str
    target_state: State
    audit_id: int
    created_at: str


class RollbackRunRecord(BaseModel):
    id: int
    rollback_audit_id: int
    model_id: str
    version: int
    slice: str
    rollback_class: str
    status: str
    snapshot_sha256: str | None
    progress: dict[str, Any]
    report: dict[str, Any] | None
    actor: str
    started_at: str
    finished_at: str | None


class RetrainMark(BaseModel):
    model_id: str
    source_model: str
    source_version: int
    run_id: int
    latest_version: int
    reason: str
    marked_at: str


class ContaminatedFeature(BaseModel):
    feature: str
    source_model: str
    source_version: int
    since: str | None
    reason: str


class DecayWindow(BaseModel):
    model_id: str
    slice: str
    starts_at: str
    ends_at: str
    relax_factor: float
    reason: str


def _snap(r: Any) -> SnapshotRecord:
    return SnapshotRecord(
        id=r.id,
        model_id=r.model_id,
        version=r.version,
        slice=r.slice,
        target_state=State(r.target_state),
        owner_model=r.owner_model,
        sha256=r.sha256,
        uri=r.uri,
        stores=json.loads(r.stores_json),
        audit_id=r.audit_id,
        created_at=r.created_at,
    )


def _run(r: Any) -> RollbackRunRecord:
    return RollbackRunRecord(
        id=r.id,
        rollback_audit_id=r.rollback_audit_id,
        model_id=r.model_id,
        version=r.version,
        slice=r.slice,
        rollback_class=r.rollback_class,
        status=r.status,
        snapshot_sha256=r.snapshot_sha256,
        progress=json.loads(r.progress_json),
        report=json.loads(r.report_json) if r.report_json else None,
        actor=r.actor,
        started_at=r.started_at,
        finished_at=r.finished_at,
    )


class RollbackStateOps(TransitionOps):
    # ------------------------------------------------------------------ snapshots in

    def transition_with_snapshots(
        self,
        model_id: str,
        version: int,
        target: State | str,
        *,
        snapshots: Sequence[TakenSnapshot],
        actor: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002 - the domain's word
        expected: State | str | None = None,
        percent: int | None = None,
        reason: str = "",
        automated: bool = False,
        mode: ShadowMode | str | None = None,
        layer: str | None = None,
        expected_percent: int | None = None,
    ) -> TransitionResult:
        """Enter CANARY or AB_TEST with the snapshots taken for it, in one transaction.

        The snapshots were taken before this call (they read external stores); here they
        are recorded under the slice lock together with the move, its audit entry naming
        them. A version already in the target state is not entering it: refused, since a
        snapshot taken now would not be the state from before its entry.
        """
        actor = self._require_actor(actor)
        target_s = parse_state(target)
        if target_s not in SNAPSHOT_TARGETS:
            raise SpecError(
                f"snapshots are taken on entry to CANARY or AB_TEST, not {target_s.value}"
            )
        expected_s = parse_state(expected) if expected is not None else None
        with self._write(actor, model_id=model_id, lock="slice", slice_=slice) as op:
            row = op.row(version, slice)
            if State(row.state) is target_s:
                raise ConflictError(
                    f"conflict: {model_id}@{version} on slice {slice!r} is already "
                    f"{target_s.value}; its entry snapshot was taken when it entered; "
                    "re-read and retry"
                )
            entry = {
                "snapshot": [
                    {"owner_model": s.owner_model, "sha256": s.sha256, "stores": s.stores}
                    for s in snapshots
                ]
            }
            result = self._transition(
                op,
                version,
                slice,
                target_s,
                expected=expected_s,
                percent=percent,
                reason=reason,
                automated=automated,
                mode=mode,
                layer=layer,
                expected_percent=expected_percent,
                audit_extra=entry if snapshots else None,
            )
            ts = op.ts.isoformat()
            for s in snapshots:
                op.conn.execute(
                    insert(state_snapshots).values(
                        model_id=model_id,
                        version=version,
                        slice=slice,
                        target_state=target_s.value,
                        owner_model=s.owner_model,
                        sha256=s.sha256,
                        uri=s.uri,
                        stores_json=canonical(s.stores),
                        audit_id=result.audit_id,
                        created_at=ts,
                    )
                )
            own = next((s for s in snapshots if s.owner_model == model_id), None)
            if own is not None:
                self._record_on_version(op.conn, model_id, version, own.uri)
            return result

    @staticmethod
    def _record_on_version(conn: Any, model_id: str, version: int, uri: str) -> None:
        """The version's `rollback_snapshot_uri`: its first entry snapshot, the state from
        before it served anything, which is what a rollback of it restores."""
        raw = conn.execute(
            select(model_versions.c.record_json).where(
                model_versions.c.model_id == model_id, model_versions.c.version == version
            )
        ).scalar_one()
        rec = json.loads(raw)
        if rec.get("rollback_snapshot_uri"):
            return
        rec["rollback_snapshot_uri"] = uri
        conn.execute(
            update(model_versions)
            .where(model_versions.c.model_id == model_id, model_versions.c.version == version)
            .values(record_json=canonical(rec))
        )

    def snapshots_of(
        self,
        model_id: str,
        version: int,
        slice: str = DEFAULT_SLICE,  # noqa: A002
    ) -> list[SnapshotRecord]:
        """Snapshots recorded for the version's entries on the slice, oldest first."""
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(
                select(state_snapshots)
                .where(
                    state_snapshots.c.model_id == model_id,
                    state_snapshots.c.version == version,
                    state_snapshots.c.slice == slice,
                )
                .order_by(state_snapshots.c.id)
            ).all()
        return [_snap(r) for r in rows]

    def entry_snapshots(
        self,
        model_id: str,
        version: int,
        slice: str = DEFAULT_SLICE,  # noqa: A002
    ) -> dict[str, SnapshotRecord]:
        """Per snapshotted model, the snapshot from before the version's first entry."""
        out: dict[str, SnapshotRecord] = {}
        for s in self.snapshots_of(model_id, version, slice):
            out.setdefault(s.owner_model, s)
        return out

    # ------------------------------------------------------------------ rollback runs

    def rollback_run(self, rollback_audit_id: int) -> RollbackRunRecord | None:
        with db.read_tx(self.engine) as conn:
            r = conn.execute(
                select(rollback_runs).where(rollback_runs.c.rollback_audit_id == rollback_audit_id)
            ).first()
        return _run(r) if r is not None else None

    def rollback_runs_of(self, model_id: str) -> list[RollbackRunRecord]:
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(
                select(rollback_runs)
                .where(rollback_runs.c.model_id == model_id)
                .order_by(rollback_runs.c.id)
            ).all()
        return [_run(r) for r in rows]

    def begin_rollback_run(
        self,
        result: TransitionResult,
        *,
        rollback_class: str,
        snapshot_sha256: str | None,
        progress: dict[str, Any],
        actor: str,
    ) -> RollbackRunRecord:
        """Record that the job took up this rollback, with what it is about to restore
        (each store's writes after the cursor, counted before anything is reverted).
        Idempotent: a run already recorded for this rollback is returned as it is."""
        actor = self._require_actor(actor)
        with self._write(actor, model_id=result.model_id, lock="model") as op:
            found = op.conn.execute(
                select(rollback_runs).where(rollback_runs.c.rollback_audit_id == result.audit_id)
            ).first()
            if found is not None:
                return op.unchanged(_run(found))
            ts = op.ts.isoformat()
            run_id = op.conn.execute(
                insert(rollback_runs).values(
                    rollback_audit_id=result.audit_id,
                    model_id=result.model_id,
                    version=result.version,
                    slice=result.slice,
                    rollback_class=rollback_class,
                    status="started",
                    snapshot_sha256=snapshot_sha256,
                    progress_json=canonical(progress),
                    report_json=None,
                    actor=op.actor,
                    started_at=ts,
                    finished_at=None,
                )
            ).inserted_primary_key[0]
            op.audit(
                "rollback_run_started",
                {
                    "run": run_id,
                    "rollback_audit_id": result.audit_id,
                    "slice": result.slice,
                    "snapshot": snapshot_sha256,
                    "steps": sorted(progress),
                },
                version=result.version,
            )
            row = op.conn.execute(select(rollback_runs).where(rollback_runs.c.id == run_id)).one()
            return _run(row)

    def record_run_step(
        self, run_id: int, step: str, outcome: dict[str, Any], *, actor: str
    ) -> RollbackRunRecord:
        """One step of a run done (a store restored, a dependent cascaded), with its result;
        a step already recorded is left as it was."""
        actor = self._require_actor(actor)
        with db.read_tx(self.engine) as conn:
            head = conn.execute(select(rollback_runs).where(rollback_runs.c.id == run_id)).first()
        if head is None:
            raise NotFoundError(f"unknown rollback run {run_id}")
        with self._write(actor, model_id=head.model_id, lock="model") as op:
            r = op.conn.execute(select(rollback_runs).where(rollback_runs.c.id == run_id)).one()
            progress = json.loads(r.progress_json)
            if step not in progress:
                raise SpecError(f"rollback run {run_id} has no step {step!r}")
            if progress[step].get("status") == "done":
                return op.unchanged(_run(r))
            progress[step] = {**progress[step], **outcome, "status": "done"}
            op.conn.execute(
                update(rollback_runs)
                .where(rollback_runs.c.id == run_id)
                .values(progress_json=canonical(progress))
            )
            op.audit(
                "rollback_run_step",
                {"run": run_id, "step": step, "slice": r.slice, **_brief(outcome)},
                version=r.version,
            )
            return _run(
                op.conn.execute(select(rollback_runs).where(rollback_runs.c.id == run_id)).one()
            )

    def finish_rollback_run(
        self,
        run_id: int,
        report: dict[str, Any],
        *,
        actor: str,
        retrain: Sequence[tuple[str, str]] = (),
        features: Sequence[tuple[str, str | None]] = (),
        decay: tuple[datetime, datetime, float, str] | None = None,
    ) -> RollbackRunRecord:
        """The report, marks, flags and decay window of a run, all in one transaction.

        A step recorded "refused" (a store whose snapshot did not verify, left untouched)
        settles the run as "failed", report written; a later run that restores it finishes
        again with a new report, the marks, flags and window already written kept."""
        actor = self._require_actor(actor)
        with db.read_tx(self.engine) as conn:
            head = conn.execute(select(rollback_runs).where(rollback_runs.c.id == run_id)).first()
        if head is None:
            raise NotFoundError(f"unknown rollback run {run_id}")
        with self._write(actor, model_id=head.model_id, lock="model") as op:
            conn = op.conn
            r = conn.execute(select(rollback_runs).where(rollback_runs.c.id == run_id)).one()
            if r.status == "done":
                return op.unchanged(_run(r))
            steps = json.loads(r.progress_json)
            pending = [k for k, v in steps.items() if v.get("status") not in ("done", "refused")]
            if pending:
                raise ConflictError(
                    f"rollback run {run_id} cannot finish: steps not done: {', '.join(pending)}"
                )
            refused = sorted(k for k, v in steps.items() if v.get("status") == "refused")
            ts = op.ts.isoformat()
            source = f"rollback of {r.model_id}@{r.version} on slice {r.slice!r}"
            first = r.status != "failed"  # a failed run's marks, flags and window stand
            for dep, why in retrain if first else ():
                latest = conn.execute(
                    select(func.max(model_versions.c.version)).where(
                        model_versions.c.model_id == dep
                    )
                ).scalar()
                conn.execute(
                    insert(retrain_marks).values(
                        model_id=dep,
                        source_model=r.model_id,
                        source_version=r.version,
                        run_id=run_id,
                        latest_version=int(latest or 0),
                        reason=f"{source}: {why}",
                        marked_at=ts,
                    )
                )
            for feature, since in features if first else ():
                conn.execute(
                    insert(contaminated_features).values(
                        feature=feature,
                        source_model=r.model_id,
                        source_version=r.version,
                        since=since,
                        run_id=run_id,
                        reason=f"{source}: fed by version {r.version} since its promotion",
                        flagged_at=ts,
                    )
                )
            if decay is not None and first:
                start, end, factor, why = decay
                conn.execute(
                    insert(decay_windows).values(
                        model_id=r.model_id,
                        slice=r.slice,
                        starts_at=start.isoformat(),
                        ends_at=end.isoformat(),
                        relax_factor=factor,
                        run_id=run_id,
                        reason=why,
                    )
                )
            conn.execute(
                update(rollback_runs)
                .where(rollback_runs.c.id == run_id)
                .values(
                    status="failed" if refused else "done",
                    report_json=canonical(report),
                    finished_at=ts,
                )
            )
            op.audit(
                "rollback_report",
                {
                    "run": run_id,
                    "slice": r.slice,
                    "report_id": report.get("id"),
                    "report_sha256": report.get("sha256"),
                    "needs_retrain": sorted(d for d, _ in retrain),
                    "contaminated_features": sorted(f for f, _ in features),
                    "decay_until": decay[1].isoformat() if decay else None,
                    "refused": refused,
                },
                version=r.version,
            )
            return _run(
                conn.execute(select(rollback_runs).where(rollback_runs.c.id == run_id)).one()
            )

    # ------------------------------------------------------------------ marks and windows

    def needs_retrain(self, model_id: str | None = None) -> list[RetrainMark]:
        """Standing NEEDS_RETRAIN marks: a mark stands until a version newer than the
        model's newest at marking time is registered."""
        newest = (
            select(func.max(model_versions.c.version))
            .where(model_versions.c.model_id == retrain_marks.c.model_id)
            .scalar_subquery()
        )
        q = select(retrain_marks).where(func.coalesce(newest, 0) <= retrain_marks.c.latest_version)
        if model_id is not None:
            q = q.where(retrain_marks.c.model_id == model_id)
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(q.order_by(retrain_marks.c.id)).all()
        return [
            RetrainMark(
                model_id=r.model_id,
                source_model=r.source_model,
                source_version=r.source_version,
                run_id=r.run_id,
                latest_version=r.latest_version,
                reason=r.reason,
                marked_at=r.marked_at,
            )
            for r in rows
        ]

    def contaminated(self, feature: str | None = None) -> list[ContaminatedFeature]:
        q = select(contaminated_features).order_by(contaminated_features.c.id)
        if feature is not None:
            q = q.where(contaminated_features.c.feature == feature)
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(q).all()
        return [
            ContaminatedFeature(
                feature=r.feature,
                source_model=r.source_model,
                source_version=r.source_version,
                since=r.since,
                reason=r.reason,
            )
            for r in rows
        ]

    def decay_window(
        self,
        model_id: str,
        slice: str = DEFAULT_SLICE,
        at: datetime | None = None,  # noqa: A002
    ) -> DecayWindow | None:
        """The decay window in force at `at` (default now), the latest if several: alert
        thresholds are relaxed by its factor while it lasts, for the reason it records."""
        at = at or self._now()
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(
                select(decay_windows)
                .where(decay_windows.c.model_id == model_id, decay_windows.c.slice == slice)
                .order_by(decay_windows.c.id.desc())
            ).all()
        for r in rows:
            if parse_ts(r.starts_at) <= at < parse_ts(r.ends_at):
                return DecayWindow(
                    model_id=r.model_id,
                    slice=r.slice,
                    starts_at=r.starts_at,
                    ends_at=r.ends_at,
                    relax_factor=r.relax_factor,
                    reason=r.reason,
                )
        return None

    # ------------------------------------------------------------------ the graph

    def actor_team(self, name: str) -> str:
        """A registered actor's team (NotFoundError naming how to register one)."""
        with db.read_tx(self.engine) as conn:
            return self._actor_team(conn, self._require_actor(name))

    def dependents_graph(self) -> dict[str, Any]:
        """Every model's spec summary, the dependents edges and the features each model's
        live contracts read: what `modelops.rollback.plan` walks. Three queries."""
        with db.read_tx(self.engine) as conn:
            specs = conn.execute(select(models.c.model_id, models.c.spec_json)).all()
            edges = conn.execute(
                select(dependencies.c.upstream_model, dependencies.c.downstream_model).distinct()
            ).all()
            reads = conn.execute(
                select(model_versions.c.model_id, contract_features.c.feature_name)
                .join(
                    contract_features,
                    contract_features.c.contract_ref == model_versions.c.feature_contract_ref,
                )
                .where(~model_versions.c.archived)
                .distinct()
            ).all()
        out_edges: dict[str, list[str]] = {}
        for up, down in edges:
            out_edges.setdefault(up, []).append(down)
        read_map: dict[str, set[str]] = {}
        for m, feature in reads:
            read_map.setdefault(m, set()).add(feature)
        # A spec is parsed once per text: a plan over the fleet reads every spec each time,
        # and an amended spec (new text) is parsed again.
        cache: dict[str, tuple[str, dict[str, Any]]] = self.__dict__.setdefault(
            "_graph_node_cache", {}
        )
        nodes = {}
        for s in specs:
            hit = cache.get(s.model_id)
            if hit is None or hit[0] != s.spec_json:
                raw = json.loads(s.spec_json)
                hit = (
                    s.spec_json,
                    {
                        "model_id": s.model_id,
                        "tier": raw["tier"],
                        "rollback_class": raw["rollback_class"],
                        "owner_team": raw["owner_team"],
                        "feeds_features": raw.get("feeds_features", []),
                        "slices": raw.get("slices", [DEFAULT_SLICE]),
                        "reads_features": [],
                    },
                )
                cache[s.model_id] = hit
            reads_of = sorted(read_map.get(s.model_id, ()))
            if reads_of != hit[1]["reads_features"]:  # a new node record only on a change
                hit = (hit[0], {**hit[1], "reads_features": reads_of})
                cache[s.model_id] = hit
            nodes[s.model_id] = hit[1]
        for v in out_edges.values():
            v.sort()
        return {"nodes": nodes, "edges": out_edges}

    def promoted_since(self, model_id: str, version: int, slice: str) -> str | None:  # noqa: A002
        """When the version last entered PROMOTED on the slice (None if it never did)."""
        v = self.get_version(model_id, version)  # type: ignore[attr-defined]
        ts = [h.ts for h in v.state_history if h.slice == slice and h.state is State.PROMOTED]
        return ts[-1].isoformat() if ts else None

    def decay_bounds(self, start: datetime, days: float) -> tuple[datetime, datetime]:
        return start, start + timedelta(days=days)


def _brief(outcome: dict[str, Any]) -> dict[str, Any]:
    """What of a step's outcome goes into its audit entry (counts and hashes, not key lists)."""
    keep = ("store", "owner_model", "mode", "content_sha256", "writes_after_cursor", "dependent")
    return {k: outcome[k] for k in keep if k in outcome}
