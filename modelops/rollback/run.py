"""The rollback run: cut traffic back, restore state, act on dependents, write the report.

Rollbacks are never gated by state: a corrupt snapshot must not leave a regressing
version serving. Order, and why:
1. Plan (a cascade without its approvals refuses the run with one line and no rows), then
   verify every snapshot blob store by store, changing nothing and stopping nothing.
2. The registry rollback (idempotent: a rerun gets the same rollback back), then the
   serving-plane pass the caller supplies (`cutover`), both timed. Always.
3. The run is recorded with one step per store to restore and per dependent to cascade,
   each store's writes after the snapshot's cursor counted before anything is reverted.
   A store whose snapshot did not verify (or that cannot be read) is recorded "refused"
   with its one line and is never touched.
4. Each other step runs and is recorded done at once. A rerun after a kill skips the steps
   recorded done, and a store the killed attempt restored before it could record so is
   recorded done without restoring it again (a SQL store's restore leaves a commit marker
   tagged with the run in its change log; a directory or S3 prefix is judged by its
   content), so writes made after the restore are never reverted by a second restore.
5. Finishing writes the report, NEEDS_RETRAIN marks, contaminated features and the decay
   window in one transaction. With a refused store the run is "failed" and `run_rollback`
   raises `RestoreRefused` (carrying the report) after traffic is back; a rerun retries
   only the refused restores, and only once their snapshot verifies.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

from modelops.errors import IllegalTransition, IntegrityError, NotFoundError, SpecError
from modelops.rollback.plan import (
    CascadeApproval,
    DependentsGraph,
    GraphNode,
    RollbackPlan,
    plan_rollback,
)
from modelops.rollback.report import (
    Cutover,
    RollbackReport,
    StoreRefused,
    StoreRestored,
    report_id,
)
from modelops.spec import DEFAULT_SLICE, ModelSpec, RollbackClass, State
from modelops.state_stores import (
    load_manifest,
    open_state_store,
    restore_snapshot,
)

if TYPE_CHECKING:
    from modelops.artifacts import ArtifactStore
    from modelops.registry import Registry
    from modelops.registry.rollback_state import RollbackRunRecord, SnapshotRecord

__all__ = ["RELAX_FACTOR", "RestoreRefused", "parse_approvals", "build_plan", "run_rollback"]

RELAX_FACTOR = 2.0  # guardrail thresholds widen by this factor inside a decay window
Hook = Callable[[str], None]


def parse_approvals(
    registry: Registry,
    model_id: str,
    slice_: str,
    given: Sequence[Any],
    *,
    actor: str,
) -> list[CascadeApproval]:
    """Signed cascade approvals (`modelops sign-cascade`), verified without being consumed:
    a name, a forged, replayed, expired or wrong-subject statement, or the acting actor's
    own, refuses the plan with one line before anything moves. The rollback consumes them."""
    return [
        CascadeApproval(dependent=dep, approver=who, team=team)
        for dep, who, team in registry.check_cascade_approvals(
            model_id, slice_, list(given), actor=actor
        )
    ]


def _recorded_approvals(
    registry: Registry, model_id: str, version: int
) -> list[CascadeApproval] | None:
    """The cascade approvals the recorded rollback of this version verified and consumed: a
    rerun plans with these (its dependents may have moved since, by its own cascade)."""
    for e in reversed(registry.audit_entries(model_id)):
        if e.version == version and e.payload.get("cascade_approvals"):
            return [
                CascadeApproval(
                    dependent=a["payload"]["model"],
                    approver=a["payload"]["signer"],
                    team=registry.actor_team(a["payload"]["signer"]),
                )
                for a in e.payload["cascade_approvals"]
            ]
    return None


def _graph_nodes(registry: Registry, raw: dict[str, dict[str, Any]]) -> dict[str, GraphNode]:
    """Validated nodes, reused while the registry hands back the same node record (it
    caches one per spec text): a fleet-wide plan then validates only what changed, which
    keeps its allocations, and the collector's pauses, small."""
    cache: dict[str, tuple[dict[str, Any], GraphNode]] = registry.__dict__.setdefault(
        "_plan_node_cache", {}
    )
    out: dict[str, GraphNode] = {}
    for m, rec in raw.items():
        hit = cache.get(m)
        if hit is None or hit[0] is not rec:
            hit = (rec, GraphNode.model_validate(rec))
            cache[m] = hit
        out[m] = hit[1]
    return out


def build_plan(
    registry: Registry,
    model_id: str,
    *,
    slice: str = DEFAULT_SLICE,  # noqa: A002 - the domain's word
    version: int | None = None,
    cascade: bool = False,
    approvals: Sequence[Any] = (),
    actor: str = "",
    verified: Sequence[CascadeApproval] | None = None,
) -> RollbackPlan:
    """The plan the dry run shows and the run executes (one code path for both).
    `verified`: approvals the registry already verified and recorded (a rerun)."""
    raw = registry.dependents_graph()
    if model_id not in raw["nodes"]:
        registry.get_model(model_id)  # NotFoundError naming how to create it
    snapshotted: list[str] = []
    if version is not None:
        snapshotted = [
            m for m in registry.entry_snapshots(model_id, version, slice) if m != model_id
        ]
    graph = DependentsGraph.model_construct(
        nodes=_graph_nodes(registry, raw["nodes"]), edges=raw["edges"], snapshotted=snapshotted
    )
    return plan_rollback(
        model_id,
        graph,
        slice=slice,
        cascade=cascade,
        approvals=(
            list(verified)
            if verified is not None
            else parse_approvals(registry, model_id, slice, approvals, actor=actor)
        ),
        actor=actor,
        known_teams=set(registry.list_teams()),
        serving=_serving(registry, slice) if cascade else None,
    )


_LIVE = (State.CANARY, State.AB_TEST, State.SHADOW, State.PROMOTED)


def _serving(registry: Registry, slice_: str) -> set[str]:
    """Models with a version a cascade would roll back on the slice (one fleet-wide read)."""
    return {ls.model_id for ls in registry.live_states(_LIVE) if ls.slice == slice_}


def _spec_of(registry: Registry, owner: str) -> ModelSpec:
    return registry.get_model(owner)


_FOUND = re.compile(r"got sha256 ([0-9a-f]{64})")
_TODO = (
    "put the snapshot's bytes back in the artifact store (or fix the store's reachability), "
    "then rerun the rollback job: it retries this restore only"
)


def _refusal(s: SnapshotRecord, store: str, blob: str, exc: Exception, what: str) -> StoreRefused:
    """The one line that names the store left untouched, expected vs found, and what to do."""
    text = " ".join(str(exc).split())
    m = _FOUND.search(text)
    if isinstance(exc, IntegrityError) and m:
        found, seen = m.group(1), f"found {m.group(1)[:16]}"
    elif isinstance(exc, NotFoundError):
        found, seen = None, "found nothing (blob absent)"
    else:
        found, seen = None, f"found nothing readable ({type(exc).__name__}: {text[:160]})"
    line = (
        f"restore refused: {s.owner_model}/{store} left untouched ({what}, snapshot "
        f"{s.sha256[:12]}): expected sha256 {blob[:16]}, {seen}; {_TODO}"
    )
    return StoreRefused(
        owner_model=s.owner_model,
        store=store,
        snapshot_sha256=s.sha256,
        expected_sha256=blob,
        found_sha256=found,
        line=line,
    )


def _check(artifacts: ArtifactStore, snaps: Sequence[SnapshotRecord]) -> dict[str, StoreRefused]:
    """Store by store, every blob a restore would read is present and hashes to its name
    (the artifact store rehashes on read). Changes nothing and never raises: what does not
    verify is refused for that store alone, and the cutover happens regardless."""
    out: dict[str, StoreRefused] = {}
    for s in snaps:
        try:
            entries = {e.name: e for e in load_manifest(artifacts, s.sha256).stores}
        except Exception as exc:  # noqa: BLE001 - any unreadable manifest refuses its stores
            for store in s.stores:
                out[_key(s.owner_model, store)] = _refusal(
                    s, store, s.sha256, exc, "its snapshot manifest"
                )
            continue
        for store in s.stores:
            e = entries.get(store)
            blob = e.blobs[0] if e and e.blobs else s.sha256
            try:
                if e is None:
                    raise IntegrityError(f"store {store!r} is not in the snapshot's manifest")
                for blob in e.blobs:
                    artifacts.verify(blob)
            except Exception as exc:  # noqa: BLE001 - unreachable storage refuses the store too
                out[_key(s.owner_model, store)] = _refusal(s, store, blob, exc, "a snapshot blob")
    return out


def _key(owner: str, store: str) -> str:
    return f"restore:{owner}/{store}"


def _count(
    registry: Registry, artifacts: ArtifactStore, s: SnapshotRecord, store: str, s3_client: Any
) -> tuple[int | None, list[str]]:
    """The store's writes after the snapshot's cursor and their keys, changing nothing;
    raises when the store cannot be read (or is no longer declared)."""
    decl = next(d for d in _spec_of(registry, s.owner_model).state_stores if d.name == store)
    entry = load_manifest(artifacts, s.sha256).entry(store)
    st = open_state_store(decl, s3_client=s3_client)
    try:
        c = st.changes_since(entry, artifacts)
    finally:
        st.close()
    return c.writes, c.keys


def _probe(
    registry: Registry,
    artifacts: ArtifactStore,
    run: RollbackRunRecord,
    snaps: Sequence[SnapshotRecord],
    refused: dict[str, StoreRefused],
    s3_client: Any,
) -> None:
    """On a rerun, a refused store whose snapshot now verifies is retried only if it can
    be read too; otherwise it stays refused and the rerun writes nothing."""
    by_key = {_key(s.owner_model, st): s for s in snaps for st in s.stores}
    for key, step in run.progress.items():
        if step.get("status") != "refused" or key in refused or key not in by_key:
            continue
        s = by_key[key]
        try:
            _count(registry, artifacts, s, step["store"], s3_client)
        except Exception as exc:  # noqa: BLE001 - still unreachable: still refused
            refused[key] = _refusal(
                s, step["store"], step["content_sha256"], exc, "the store could not be read"
            )


def _steps(
    registry: Registry,
    artifacts: ArtifactStore,
    snaps: Sequence[SnapshotRecord],
    plan: RollbackPlan,
    cut: Cutover,
    refused: dict[str, StoreRefused],
    s3_client: Any,
) -> dict[str, dict[str, Any]]:
    """The run's steps. A store's writes after the snapshot are counted now, after the
    cutover and before any restore, so none escapes the count; a store that cannot be
    read for it is refused like one whose snapshot does not verify (nothing changed)."""
    steps: dict[str, dict[str, Any]] = {"cutover": {"kind": "cutover", **cut.model_dump()}}
    steps["cutover"]["status"] = "done"
    for s in snaps:
        for store, content in sorted(s.stores.items()):
            key = _key(s.owner_model, store)
            step: dict[str, Any] = {
                "kind": "restore",
                "owner_model": s.owner_model,
                "store": store,
                "snapshot_sha256": s.sha256,
                "content_sha256": content,
                "writes_before_restore": None,
                "keys_before_restore": [],
                "status": "pending",
            }
            if key not in refused:
                try:
                    writes, keys = _count(registry, artifacts, s, store, s3_client)
                    step.update(writes_before_restore=writes, keys_before_restore=keys)
                except Exception as exc:  # noqa: BLE001 - an unreachable store is refused
                    refused[key] = _refusal(s, store, content, exc, "the store could not be read")
            if key in refused:
                step.update(status="refused", refusal=refused[key].line)
            steps[key] = step
    for d in plan.by_action("cascade"):
        steps[f"cascade:{d.model_id}"] = {
            "kind": "cascade",
            "dependent": d.model_id,
            "status": "pending",
        }
    return steps


def _restore_step(
    registry: Registry,
    artifacts: ArtifactStore,
    step: dict[str, Any],
    s3_client: Any,
    *,
    run_id: int,
    resumed: bool,
) -> dict[str, Any]:
    """Restore one store, tagged with the run. A resumed run first asks whether its killed
    attempt already committed this restore: a SQL store knows exactly (the restore's
    commit marker in its change log); a directory or S3 prefix keeps no record, so there
    the store's content deciding is the best available answer."""
    spec = _spec_of(registry, step["owner_model"])
    decl = next((d for d in spec.state_stores if d.name == step["store"]), None)
    if decl is None:
        raise SpecError(
            f"{step['owner_model']} no longer declares state store {step['store']!r}; "
            "restore needs the declaration"
        )
    tag = f"run{run_id}"
    if resumed:
        entry = load_manifest(artifacts, step["snapshot_sha256"]).entry(step["store"])
        store = open_state_store(decl, s3_client=s3_client)
        try:
            committed = store.restore_committed(entry, tag)
            if committed is None:
                committed = store.content_sha256() == step["content_sha256"]
        finally:
            store.close()
        if committed:
            # The killed attempt restored it and could not say so: record, never restore twice.
            return {
                "mode": "completed_by_earlier_attempt",
                "writes_after_cursor": step.get("writes_before_restore"),
                "keys_after_cursor": step.get("keys_before_restore", []),
                "elapsed_s": 0.0,
                "note": "restored by an attempt that was killed before it recorded so; the "
                "writes were counted when the run began",
            }
    result = restore_snapshot(
        spec.state_stores,
        artifacts,
        step["snapshot_sha256"],
        only=[step["store"]],
        s3_client=s3_client,
        tag=tag,
    )
    r = result.stores[0]
    return {
        "mode": r.mode,
        "store_kind": r.kind,
        "writes_after_cursor": r.writes_after_cursor,
        # Without a change log (directory, S3) the items that differed are what it names.
        "keys_after_cursor": r.keys_after_cursor or r.rewritten,
        "verified_sha256": r.content_sha256,
        "elapsed_s": r.elapsed_s,
        "note": r.note,
    }


def run_rollback(
    registry: Registry,
    artifacts: ArtifactStore,
    model_id: str,
    version: int,
    *,
    actor: str,
    slice: str = DEFAULT_SLICE,  # noqa: A002
    expected: State | str | None = None,
    reason: str = "",
    automated: bool = False,
    cascade: bool = False,
    approvals: Sequence[Any] = (),
    cutover: Callable[[], Any] | None = None,
    hook: Hook | None = None,
    s3_client: Any = None,
) -> RollbackReport:
    """Roll `model_id@version` back on `slice`, completely and idempotently (see module).
    Raises `RestoreRefused` after the cutover when a store's snapshot did not verify."""
    hook = hook or (lambda _step: None)
    spec = registry.get_model(model_id)
    rerun = registry.state_of(model_id, version, slice) is State.ROLLED_BACK
    plan = build_plan(
        registry,
        model_id,
        slice=slice,
        version=version,
        cascade=cascade,
        approvals=approvals,
        actor=actor,
        verified=_recorded_approvals(registry, model_id, version) if rerun else None,
    )
    entry = registry.entry_snapshots(model_id, version, slice)
    restore_owners = {model_id} | {d.model_id for d in plan.by_action("restore_state")}
    snaps = [s for m, s in entry.items() if m in restore_owners]
    refused = _check(artifacts, snaps)  # nothing moves here, and nothing here stops the cutover

    # A rerun (a retried or resumed job) finds the version already ROLLED_BACK: it takes the
    # recorded rollback back instead of failing the compare-and-set its first run passed.
    if rerun:
        expected = None
    t0 = time.perf_counter()
    res = registry.rollback(
        model_id,
        actor=actor,
        slice=slice,
        reason=reason,
        automated=automated,
        expected_version=version,
        expected=expected,
        cascade_approvals=list(approvals) if cascade and plan.by_action("cascade") else (),
    )
    registry_s = round(time.perf_counter() - t0, 3)
    hook("registry")
    run = registry.rollback_run(res.audit_id)
    if run is not None:
        _probe(registry, artifacts, run, snaps, refused, s3_client)
    if run is not None and run.report and (run.status == "done" or _still_refused(run, refused)):
        # Answered from the record: no cutover, no restore again, nothing written.
        return _settled(_stored(run))
    serving_s = None
    if cutover is not None and (run is None or res.changed):
        t1 = time.perf_counter()
        cutover()
        serving_s = round(time.perf_counter() - t1, 3)
    resumed = run is not None
    if run is None:
        cut = Cutover(
            from_state=res.from_state.value,
            restored_version=res.restored_version,
            serving_version=registry.desired_state(model_id, slice).prod_version,
            registry_s=registry_s,
            serving_s=serving_s,
        )
        run = registry.begin_rollback_run(
            res,
            rollback_class=spec.rollback_class.value,
            snapshot_sha256=entry[model_id].sha256 if model_id in entry else None,
            progress=_steps(registry, artifacts, snaps, plan, cut, refused, s3_client),
            actor=actor,
        )
    hook("begun")
    for key in list(run.progress):
        step = run.progress[key]
        if step.get("status") == "done":
            continue
        if step.get("status") == "refused" and (key in refused or key not in _keys(snaps)):
            continue  # its snapshot still does not verify: the store stays untouched
        if step["kind"] == "restore":
            outcome = _restore_step(
                registry, artifacts, step, s3_client, run_id=run.id, resumed=resumed
            )
        else:
            outcome = _cascade_step(
                registry,
                step["dependent"],
                model_id,
                version,
                run.id,
                actor=actor,
                slice_=slice,
                automated=automated,
            )
        hook(f"applied:{key}")
        run = registry.record_run_step(run.id, key, outcome, actor=actor)
        hook(f"recorded:{key}")
    return _settled(_finish(registry, spec, run, plan, actor=actor, reason=reason, refused=refused))


class RestoreRefused(IntegrityError):
    """Traffic is back on the last good version, but a store's snapshot did not verify and
    that store was left untouched: the run ends failed, loudly, carrying its report."""

    def __init__(self, report: RollbackReport) -> None:
        super().__init__(report.failure_line())
        self.report = report


def _settled(report: RollbackReport) -> RollbackReport:
    if report.failed:
        raise RestoreRefused(report)
    return report


def _keys(snaps: Sequence[SnapshotRecord]) -> set[str]:
    return {_key(s.owner_model, store) for s in snaps for store in s.stores}


def _still_refused(run: RollbackRunRecord, refused: dict[str, StoreRefused]) -> bool:
    """A failed run whose refused stores all still fail verification has nothing to retry."""
    if run.status != "failed":
        return False
    return all(k in refused for k, v in run.progress.items() if v.get("status") == "refused")


def _stored(run: RollbackRunRecord) -> RollbackReport:
    return RollbackReport.model_validate(
        {k: v for k, v in (run.report or {}).items() if k not in ("sha256", "writes_reverted")}
    )


def _cascade_step(
    registry: Registry,
    dep: str,
    model_id: str,
    version: int,
    run_id: int,
    *,
    actor: str,
    slice_: str,
    automated: bool,
) -> dict[str, Any]:
    """Roll the dependent's live version back on the slice (a bare rollback, idempotent);
    a dependent with nothing serving there is recorded as such, not failed."""
    try:
        r = registry.rollback(
            dep,
            actor=actor,
            slice=slice_,
            automated=automated,
            reason=f"cascade from the rollback of {model_id}@{version} (run {run_id})",
        )
    except (IllegalTransition, NotFoundError) as exc:
        return {"version": None, "changed": False, "note": str(exc)}
    return {"version": r.version, "changed": r.changed, "audit_id": r.audit_id}


def _restored(key: str, step: dict[str, Any]) -> StoreRestored:
    return StoreRestored(
        owner_model=step["owner_model"],
        store=step["store"],
        kind=step.get("store_kind", ""),
        snapshot_sha256=step["snapshot_sha256"],
        content_sha256=step.get("verified_sha256", step["content_sha256"]),
        mode=step["mode"],
        writes_after_cursor=step.get("writes_after_cursor"),
        keys_after_cursor=step.get("keys_after_cursor", []),
        elapsed_s=step.get("elapsed_s", 0.0),
        note=step.get("note", ""),
    )


def _recorded_refusal(step: dict[str, Any]) -> StoreRefused:
    """A refusal as the run recorded it (a store no longer in the plan's snapshots)."""
    return StoreRefused(
        owner_model=step["owner_model"],
        store=step["store"],
        snapshot_sha256=step["snapshot_sha256"],
        expected_sha256=step["content_sha256"],
        line=step.get("refusal", f"restore refused: {step['owner_model']}/{step['store']}"),
    )


def _finish(
    registry: Registry,
    spec: ModelSpec,
    run: RollbackRunRecord,
    plan: RollbackPlan,
    *,
    actor: str,
    reason: str,
    refused: dict[str, StoreRefused],
) -> RollbackReport:
    model_id, version, slice_ = run.model_id, run.version, run.slice
    cut = Cutover.model_validate(
        {k: v for k, v in run.progress["cutover"].items() if k in Cutover.model_fields}
    )
    own, downstream, not_restored = [], [], []
    for key, step in run.progress.items():
        if step["kind"] == "restore" and step.get("status") == "refused":
            not_restored.append(refused.get(key) or _recorded_refusal(step))
        elif step["kind"] == "restore":
            (own if step["owner_model"] == model_id else downstream).append(_restored(key, step))
    irreversible = spec.rollback_class is RollbackClass.IRREVERSIBLE
    since = registry.promoted_since(model_id, version, slice_)
    features = [(f, since) for f in spec.feeds_features]
    retrain = [(d.model_id, d.note) for d in plan.by_action("needs_retrain")]
    now = registry.clock()
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    decay = None
    if irreversible:
        start, end = registry.decay_bounds(now, spec.decay_window_days)
        why = (
            f"rollback of IRREVERSIBLE {model_id}@{version}: the restored version runs on an "
            "input distribution its predecessor shifted, so metrics are expected to decay; "
            "relaxed so that decay does not trigger a second, spurious rollback"
        )
        decay = (start, end, RELAX_FACTOR, why)
    cascaded = [
        {
            "model_id": s["dependent"],
            "note": f"v{s['version']} rolled back" if s.get("version") else s.get("note", ""),
        }
        for s in run.progress.values()
        if s["kind"] == "cascade"
    ]
    restored = cut.restored_version
    serving = f"v{restored}" if restored is not None else "the prod version"
    delivered = [f"serving restored: {serving} serves slice {slice_!r} (cutover {cut.total_s} s)"]
    caveats: list[str] = []
    if own:
        n = sum(s.writes_after_cursor or 0 for s in own)
        delivered.append(
            f"state restored: {len(own)} store(s) verified by hash; {n} writes after the "
            "snapshot reverted"
        )
    if not_restored:
        names = ", ".join(f"{r.owner_model}/{r.store}" for r in not_restored)
        delivered.append(
            f"state NOT restored: {names} left untouched, its snapshot does not verify (the "
            "run ends failed; a rerun retries only these, once their snapshot verifies)"
        )
    if own and len(spec.slices) > 1:
        caveats.append(
            f"the state stores are shared by all of {model_id}'s slices: writes made after the "
            f"snapshot through slices other than {slice_!r} were reverted too"
        )
    if not own and spec.rollback_class is RollbackClass.STATE_SNAPSHOT:
        caveats.append(
            f"no entry snapshot of {model_id}@{version} on slice {slice_!r} (it never entered "
            "CANARY or AB_TEST there): its state was not restored"
        )
    if irreversible:
        feats = ", ".join(f for f, _ in features) or "none declared"
        delivered.append(
            f"input distribution perturbed: features {feats} carry v{version}'s outputs since "
            f"{since or 'its entry'}"
        )
        deps = ", ".join(d for d, _ in retrain) or "none"
        delivered.append(f"dependents contaminated: NEEDS_RETRAIN on {deps}")
        caveats.append(f"what v{version} already did cannot be undone")
    delivered.append(
        f"audit trail complete: run {run.id}, rollback audit entry {run.rollback_audit_id}"
    )
    report = RollbackReport(
        id=report_id(model_id, version, slice_, run.id),
        run_id=run.id,
        model_id=model_id,
        version=version,
        slice=slice_,
        rollback_class=spec.rollback_class.value,
        actor=actor,
        reason=reason,
        started_at=run.started_at,
        finished_at=now.isoformat(),
        cutover=cut,
        state=own,
        contaminated_features=[{"feature": f, "since": s} for f, s in features],
        needs_retrain=[{"model_id": d, "note": n} for d, n in retrain],
        downstream_state=downstream,
        refused=not_restored,
        cascaded=cascaded,
        warned=[d.model_id for d in plan.by_action("warn")],
        decay_window=(
            {
                "starts_at": decay[0].isoformat(),
                "ends_at": decay[1].isoformat(),
                "days": spec.decay_window_days,
                "relax_factor": decay[2],
                "reason": decay[3],
            }
            if decay
            else None
        ),
        plan=plan,
        delivered=delivered,
        caveats=caveats,
    )
    registry.finish_rollback_run(
        run.id, report.document(), actor=actor, retrain=retrain, features=features, decay=decay
    )
    return report
