"""Continuous learners (design class C2): bounded online-learning windows.

A learner whose weights change by the minute is served from hard checkpoints, one every
`spec.continuous.checkpoint_every_hours`: each is an ordinary version registered on the
automated weight-refresh path, content-addressed, so prod serves immutable bytes and the
continuous update only ever feeds the next checkpoint. The newest
`retain_checkpoints` stay restorable; older ones are ARCHIVED (never prod, never the
rollback target). "Roll back to the checkpoint at time T" walks prod back through the
existing compare-and-set rollback, one audited step per version, in one transaction.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from modelops.contracts import FeatureContract
from modelops.desired import last_good
from modelops.errors import IllegalTransition, NotFoundError, SpecError
from modelops.lifecycle import ROLLBACK_SOURCES
from modelops.spec import DEFAULT_SLICE, ModelSpec, State, VersionMeta
from modelops.store import db
from modelops.store.tables import model_versions, slice_states, state_changes

from .checks import unknown_slice
from .records import Candidate, DatasetInput, TransitionResult
from .rollback import RollbackOps

if TYPE_CHECKING:
    from .versions import VersionOps

    class _Bases(VersionOps, RollbackOps):
        pass
else:
    # At run time the facade's other bases bring VersionOps; naming it here too would
    # leave the Registry no consistent method order.
    _Bases = RollbackOps

__all__ = ["Checkpoint", "CheckpointOps", "CheckpointRollback", "checkpoint_run_id"]

# States a retention pass may archive (their lifecycle edge to ARCHIVED exists).
_ARCHIVABLE = frozenset(
    {State.REGISTERED, State.OFFLINE_PASSED, State.FAILED, State.DEPRECATED, State.ROLLED_BACK}
)


class Checkpoint(BaseModel):
    """One checkpoint as seen on one slice."""

    version: int
    checkpoint_at: datetime
    weights_hash: str
    weights_uri: str
    state: State
    ever_promoted: bool


class CheckpointRollback(BaseModel):
    """What a rollback to a checkpoint did: the checkpoint now served and each step taken."""

    model_id: str
    slice: str
    version: int
    checkpoint_at: datetime
    steps: list[TransitionResult] = Field(default_factory=list)
    changed: bool = True


def checkpoint_run_id(at: datetime) -> str:
    """The training run id of the checkpoint at `at`: one checkpoint time is one version,
    so a redelivered checkpoint returns the version it registered, bytes unchanged."""
    return "checkpoint-" + at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _require_continuous(spec: ModelSpec) -> None:
    if spec.continuous is None:
        raise SpecError(
            f"{spec.model_id!r} is not a continuous learner (its spec sets no `continuous`); "
            f"roll it back by version: modelops rollback {spec.model_id} --version N"
        )


def _aware(at: datetime, what: str) -> datetime:
    if at.tzinfo is None:
        raise SpecError(f"{what} {at.isoformat()} has no timezone; allowed e.g. 2026-01-01T06:00Z")
    return at


class CheckpointOps(_Bases):
    # ------------------------------------------------------------------ register

    def register_checkpoint(
        self,
        spec: ModelSpec,
        *,
        checkpoint_at: datetime,
        weights_hash: str,
        weights_uri: str,
        training_data: DatasetInput,
        eval_set: DatasetInput,
        contract: FeatureContract | None = None,
        meta: VersionMeta | None = None,
        ensure_team_by: str | None = None,
        actor: str = "system",
    ) -> Candidate:
        """Register the checkpoint at `checkpoint_at` as a candidate on the weight-refresh
        path (parent: the newest checkpoint), then apply retention.

        Checkpoints are published in time order: one at or before the newest registered
        checkpoint, or in the future, is refused. A redelivery of a registered checkpoint
        time returns its version, whatever bytes came with it (its bytes never change)."""
        _require_continuous(spec)
        at = _aware(checkpoint_at, "checkpoint_at")
        run_id = checkpoint_run_id(at)
        known = self.find_candidate(spec.model_id, run_id)
        if known is None:
            now = self._now()
            if at > now:
                raise SpecError(
                    f"checkpoint_at {at.isoformat()} is in the future (now {now.isoformat()}); "
                    "allowed: a time at or before now"
                )
        existing = self._published(spec) if known is None else []
        if existing and at <= existing[-1].checkpoint_at:
            raise SpecError(
                f"checkpoint_at {at.isoformat()} is not after {spec.model_id}'s newest "
                f"checkpoint ({existing[-1].checkpoint_at.isoformat()}, version "
                f"{existing[-1].version}); checkpoints are published in time order"
            )
        meta = (meta or VersionMeta()).model_copy(update={"checkpoint_at": at})
        cand = self.register_candidate(
            spec,
            weights_hash=weights_hash,
            weights_uri=weights_uri,
            training_run_id=run_id,
            training_data=training_data,
            eval_set=eval_set,
            contract=contract,
            parent=existing[-1].version if existing else None,
            meta=meta,
            ensure_team_by=ensure_team_by,
            actor=actor,
        )
        if cand.created:
            self.retain_checkpoints(spec.model_id, actor=actor)
        return cand

    # ------------------------------------------------------------------ read

    def _published(self, spec: ModelSpec) -> list[Checkpoint]:
        """The checkpoints already registered (none before the model's first)."""
        with db.read_tx(self.engine) as conn:
            try:
                self._spec(conn, spec.model_id)
            except NotFoundError:
                return []
            return self._checkpoints(conn, spec.model_id, spec.slices[0])

    def checkpoints(self, model_id: str, slice: str = DEFAULT_SLICE) -> list[Checkpoint]:  # noqa: A002
        """The model's checkpoints on one slice, oldest first."""
        with db.read_tx(self.engine) as conn:
            spec = self._spec(conn, model_id)
            _require_continuous(spec)
            if slice not in spec.slices:
                raise unknown_slice(spec, slice)
            return self._checkpoints(conn, model_id, slice)

    @staticmethod
    def _checkpoints(conn: Connection, model_id: str, slice_: str) -> list[Checkpoint]:
        rows = conn.execute(
            select(
                model_versions.c.version,
                model_versions.c.weights_hash,
                model_versions.c.weights_uri,
                model_versions.c.record_json,
                slice_states.c.state,
            )
            .join(
                slice_states,
                (slice_states.c.model_id == model_versions.c.model_id)
                & (slice_states.c.version == model_versions.c.version),
            )
            .where(model_versions.c.model_id == model_id, slice_states.c.slice == slice_)
        ).all()
        promoted = set(
            conn.execute(
                select(state_changes.c.version).where(
                    state_changes.c.model_id == model_id,
                    state_changes.c.slice == slice_,
                    state_changes.c.state == State.PROMOTED.value,
                )
            )
            .scalars()
            .all()
        )
        out = []
        for r in rows:
            at = json.loads(r.record_json).get("checkpoint_at")
            if at is None:
                continue  # a version registered before the model became a learner
            out.append(
                Checkpoint(
                    version=int(r.version),
                    checkpoint_at=datetime.fromisoformat(at),
                    weights_hash=r.weights_hash,
                    weights_uri=r.weights_uri,
                    state=State(r.state),
                    ever_promoted=int(r.version) in promoted,
                )
            )
        return sorted(out, key=lambda c: (c.checkpoint_at, c.version))

    # ------------------------------------------------------------------ retention

    def retain_checkpoints(self, model_id: str, *, actor: str = "system") -> list[tuple[int, str]]:
        """Archive every checkpoint older than the newest K on each slice, except the slice's
        prod, its rollback target and live candidates; one transaction, one audit entry per
        archived (version, slice). Returns what was archived."""
        actor = self._require_actor(actor)
        archived: list[tuple[int, str]] = []
        with db.write_tx(self.engine) as conn:
            spec = self._spec(conn, model_id)
            _require_continuous(spec)
            assert spec.continuous is not None
            keep = spec.continuous.retain_checkpoints
            for s in sorted(spec.slices):
                older = self._checkpoints(conn, model_id, s)[:-keep]
                for cp in older:
                    if cp.state not in _ARCHIVABLE:
                        continue
                    with self._write(
                        actor, model_id=model_id, lock="slice", slice_=s, within=conn
                    ) as op:
                        current = State(op.row(cp.version, s).state)
                        if current not in _ARCHIVABLE or cp.version == last_good(
                            self._slice_rows(conn, model_id, s)
                        ):
                            op.unchanged(None)
                            continue
                        self._transition(
                            op,
                            cp.version,
                            s,
                            State.ARCHIVED,
                            expected=current,
                            automated=True,
                            reason=f"checkpoint retention: older than the newest {keep}",
                        )
                        archived.append((cp.version, s))
        return archived

    # ------------------------------------------------------------------ rollback

    def rollback_to_checkpoint(
        self,
        model_id: str,
        at: datetime,
        *,
        actor: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        reason: str = "",
        automated: bool = False,
    ) -> CheckpointRollback:
        """Serve the newest checkpoint at or before `at` that was promoted on the slice (a
        checkpoint later ROLLED_BACK keeps that verdict and is passed over).

        Live candidates are rolled back first, then prod, step by step through the rollback
        targets, until that checkpoint is prod: each step is a compare-and-set rollback with
        its own audit entry, all in one transaction, so a refusal leaves nothing. Already
        prod: nothing is written (`changed=False`)."""
        actor = self._require_actor(actor)
        at = _aware(at, "--at")
        now = self._now()
        if at > now:
            raise SpecError(
                f"--at {at.isoformat()} is in the future (now {now.isoformat()}); allowed: a "
                "time at or before now"
            )
        why = reason or f"rollback to the checkpoint at {at.isoformat()}"
        steps: list[TransitionResult] = []
        with db.write_tx(self.engine) as conn:
            spec = self._spec(conn, model_id)
            _require_continuous(spec)
            if slice not in spec.slices:
                raise unknown_slice(spec, slice)
            target: Checkpoint | None = None
            for _ in range(len(self._checkpoints(conn, model_id, slice)) + 64):
                with self._write(
                    actor, model_id=model_id, lock="slice", slice_=slice, within=conn
                ) as op:
                    if target is None:  # chosen once, under the slice lock
                        target = _choose(
                            model_id, slice, at, self._checkpoints(conn, model_id, slice)
                        )
                    rows = sorted(self._slice_rows(conn, model_id, slice), key=lambda r: r.version)
                    state = State(op.row(target.version, slice).state)
                    if state is State.PROMOTED:
                        op.unchanged(None)
                        break
                    live = [r for r in rows if r.state in ROLLBACK_SOURCES - {State.PROMOTED}]
                    prod = next((r for r in rows if r.state is State.PROMOTED), None)
                    if state is not State.DEPRECATED or (not live and prod is None):
                        raise IllegalTransition(
                            f"{model_id}@{target.version} (checkpoint "
                            f"{target.checkpoint_at.isoformat()}) is {state.value} on slice "
                            f"{slice!r} and no rollback restores it; a rollback serves again "
                            "only a retained (DEPRECATED) checkpoint"
                        )
                    step = live[-1] if live else prod
                    assert step is not None
                    steps.append(
                        self._transition(
                            op,
                            step.version,
                            slice,
                            State.ROLLED_BACK,
                            expected=step.state,
                            reason=why,
                            automated=automated,
                        )
                    )
            else:  # pragma: no cover - each step retires one version, so this ends
                raise AssertionError("rollback to checkpoint did not converge")
        assert target is not None
        return CheckpointRollback(
            model_id=model_id,
            slice=slice,
            version=target.version,
            checkpoint_at=target.checkpoint_at,
            steps=steps,
            changed=bool(steps),
        )


def _choose(model_id: str, slice_: str, at: datetime, cps: list[Checkpoint]) -> Checkpoint:
    """The newest checkpoint at or before `at` ever promoted on the slice and not since
    rolled back; an ARCHIVED one is past retention and is refused, not skipped."""
    eligible = [
        c
        for c in cps
        if c.checkpoint_at <= at and c.ever_promoted and c.state is not State.ROLLED_BACK
    ]
    if not eligible:
        kept = [c for c in cps if c.ever_promoted and c.state is not State.ARCHIVED]
        oldest = f"; oldest restorable: {kept[0].checkpoint_at.isoformat()}" if kept else ""
        raise NotFoundError(
            f"no checkpoint of {model_id} at or before {at.isoformat()} was promoted on slice "
            f"{slice_!r}{oldest}"
        )
    pick = eligible[-1]
    if pick.state is State.ARCHIVED:
        raise IllegalTransition(
            f"the checkpoint of {model_id} at {pick.checkpoint_at.isoformat()} (version "
            f"{pick.version}) is ARCHIVED, past retention; restorable checkpoints are the "
            "retained ones (modelops checkpoint list)"
        )
    return pick
