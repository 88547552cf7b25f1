"""Model versions: registration (alone, or as a whole candidate in one call) and reads.

Registration is idempotent on redelivery, because orchestrators redeliver: the same
(model, weights, training run) is the same version, and `register_candidate` goes further
and treats one training run as one version whatever bytes its retrain produced.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import DBAPIError

from modelops.contracts import (
    ContractCheck,
    FeatureContract,
    FeatureSchema,
    parse_contract_ref,
    validate_contract,
)
from modelops.desired import DesiredState
from modelops.errors import ConflictError, IntegrityError, NotFoundError, SpecError
from modelops.spec import (
    DEFAULT_SLICE,
    CodeRef,
    DatasetRef,
    ModelSpec,
    ModelVersion,
    RuntimeRequirements,
    State,
    StateChange,
    VersionMeta,
)
from modelops.store import db
from modelops.store.tables import (
    dataset_pins,
    dependencies,
    feature_contracts,
    model_versions,
    slice_states,
    state_changes,
)

from .catalog import CatalogOps
from .checks import actor_name, as_ref, check_dataset_args, check_dataset_hash, team_name
from .records import Candidate, DatasetInput, canonical, dump, load
from .statements import (
    Q_BY_RUN,
    Q_DESIRED,
    Q_IDEMPOTENT,
    Q_MODEL_EDGES,
    Q_NEXT_VERSION,
    U_NEXT_VERSION,
    WriteOp,
)

__all__ = ["VersionOps"]

# A lost race on PostgreSQL (two first registrations of one run insert the same new team,
# dataset or model, or deadlock on their locks) is retried: the retry finds the winner's rows.
_RETRY_SQLSTATES = frozenset({"23505", "40001", "40P01"})
_RETRIES = 5


class VersionOps(CatalogOps):
    # ------------------------------------------------------------------ register_version

    def register_version(
        self,
        model_id: str,
        *,
        weights_hash: str,
        weights_uri: str,
        training_run_id: str,
        training_data: str | DatasetRef,
        eval_set: str | DatasetRef,
        feature_contract_ref: str | None = None,
        parent: int | None = None,
        meta: VersionMeta | None = None,
        actor: str = "system",
    ) -> ModelVersion:
        """Register a version; a redelivered (model, weights_hash, run id) returns the same one."""
        actor = self._require_actor(actor)
        meta = meta or VersionMeta()
        td = as_ref(training_data, "--training-data")
        es = as_ref(eval_set, "--eval-set")
        _check_run_and_contract(training_run_id, feature_contract_ref)
        with self._write(actor, model_id=model_id, lock="model") as op:
            found = op.conn.execute(
                Q_IDEMPOTENT, {"m": model_id, "h": weights_hash, "r": training_run_id}
            ).scalar()
            if found is not None:
                return op.unchanged(self._load_version(op.conn, model_id, int(found)))
            return self._add_version(
                op,
                weights_hash,
                weights_uri,
                training_run_id,
                td,
                es,
                feature_contract_ref,
                parent,
                meta,
            )

    def _add_version(
        self,
        op: WriteOp,
        weights_hash: str,
        weights_uri: str,
        training_run_id: str,
        td: DatasetRef,
        es: DatasetRef,
        contract_ref: str | None,
        parent: int | None,
        meta: VersionMeta,
    ) -> ModelVersion:
        """Check what the version names, write it on every slice as REGISTERED, audit it."""
        self._check_version_inputs(op, td, es, contract_ref, parent)
        spec = op.model
        version = int(op.conn.execute(Q_NEXT_VERSION, {"m": spec.model_id}).scalar_one())
        self._insert_version(
            op,
            version,
            weights_hash,
            weights_uri,
            training_run_id,
            td,
            es,
            contract_ref,
            parent,
            meta,
        )
        pins = [(td, "training_data"), (es, "eval_set")]
        self._pin_lineage(op, version, pins)
        edges = self._add_edges(op.conn, spec.model_id, version, meta.downstream_dependents, op.ts)
        op.audit(
            "register_version",
            {
                "weights_hash": weights_hash,
                "weights_uri": weights_uri,
                "training_run_id": training_run_id,
                "feature_contract_ref": contract_ref,
                "parent": parent,
                "pins": [f"{r} ({role})" for r, role in pins],
                "downstream_dependents": edges,
                **(
                    {"drift_reference_hash": meta.drift_reference_hash}
                    if meta.drift_reference_hash is not None
                    else {}
                ),
            },
            version=version,
        )
        # Built from what was just written, not read back: registration is a hot path.
        downs = op.conn.execute(Q_MODEL_EDGES, {"m": spec.model_id}).scalars().all()
        return _new_version(
            spec,
            version,
            weights_hash,
            weights_uri,
            training_run_id,
            td,
            es,
            contract_ref,
            parent,
            meta,
            op.ts,
            op.actor,
            sorted(set(downs) | set(meta.downstream_dependents)),
        )

    def _check_version_inputs(
        self,
        op: WriteOp,
        td: DatasetRef,
        es: DatasetRef,
        contract_ref: str | None,
        parent: int | None,
    ) -> None:
        """Lineage never breaks (invariant 2): everything a version names must exist."""
        for ref, kind, flag in ((td, "dataset", "training data"), (es, "eval_set", "eval set")):
            rec = self._dataset(op.conn, ref.name, ref.version)
            if rec.kind != kind:
                raise SpecError(
                    f"{flag} {ref} is registered as a {rec.kind}; {flag} must be a {kind}"
                )
        if contract_ref is not None:
            name, ver = parse_contract_ref(contract_ref)
            n = op.conn.execute(
                select(func.count())
                .select_from(feature_contracts)
                .where(feature_contracts.c.name == name, feature_contracts.c.version == ver)
            ).scalar()
            if n == 0:
                raise NotFoundError(f"unknown feature contract {contract_ref}; register it first")
        if parent is not None:
            self._version_row(op.conn, op.model.model_id, parent)

    def _insert_version(
        self,
        op: WriteOp,
        version: int,
        weights_hash: str,
        weights_uri: str,
        training_run_id: str,
        td: DatasetRef,
        es: DatasetRef,
        contract_ref: str | None,
        parent: int | None,
        meta: VersionMeta,
    ) -> None:
        """The version row, and REGISTERED with its history on every slice of the model."""
        spec, conn, ts_s, actor = op.model, op.conn, op.ts.isoformat(), op.actor
        model_id = spec.model_id
        record = {
            "runtime_requirements": meta.runtime_requirements.model_dump(mode="json"),
            "preprocess": dump(meta.preprocess),
            "postprocess": dump(meta.postprocess),
            "training_code_version": dump(meta.training_code_version),
            "training_data_version": td.model_dump(),
            "eval_set_version": es.model_dump(),
            "eval_metrics": meta.eval_metrics,
            "eval_slice_metrics": meta.eval_slice_metrics,
            "rollback_snapshot_uri": meta.rollback_snapshot_uri,
            "signature": meta.signature,
        }
        if meta.drift_reference_hash is not None:  # absent, not null: older records stay equal
            record["drift_reference_uri"] = meta.drift_reference_uri
            record["drift_reference_hash"] = meta.drift_reference_hash
        if meta.checkpoint_at is not None:  # a continuous learner's checkpoint (spec.continuous)
            record["checkpoint_at"] = meta.checkpoint_at.isoformat()
        conn.execute(U_NEXT_VERSION, {"m": model_id, "n": version + 1})
        conn.execute(
            insert(model_versions).values(
                model_id=model_id,
                version=version,
                weights_uri=weights_uri,
                weights_hash=weights_hash,
                framework=spec.framework.value,
                feature_contract_ref=contract_ref,
                training_run_id=training_run_id,
                parent_version=parent,
                archived=False,
                record_json=canonical(record),
                created_at=ts_s,
            )
        )
        key = {"model_id": model_id, "version": version, "percent": None}
        conn.execute(
            insert(slice_states),
            [
                {
                    **key,
                    "slice": s,
                    "state": State.REGISTERED.value,
                    "params_json": "{}",
                    "epoch": 0,
                    "updated_at": ts_s,
                }
                for s in spec.slices
            ],
        )
        conn.execute(
            insert(state_changes),
            [
                {
                    **key,
                    "slice": s,
                    "from_state": None,
                    "state": State.REGISTERED.value,
                    "ts": ts_s,
                    "actor": actor,
                    "reason": "registered",
                    "gate_results_json": "{}",
                }
                for s in spec.slices
            ],
        )

    @staticmethod
    def _pin_lineage(op: WriteOp, version: int, pins: list[tuple[DatasetRef, str]]) -> None:
        op.conn.execute(
            insert(dataset_pins),
            [
                {
                    "dataset_name": r.name,
                    "dataset_version": r.version,
                    "model_id": op.model.model_id,
                    "version": version,
                    "role": role,
                }
                for r, role in pins
            ],
        )

    def register_weights(
        self,
        model_id: str,
        weights: Path,
        *,
        store: Any,
        expected_hash: str | None = None,
        **kw: Any,
    ) -> ModelVersion:
        """Store weights content-addressed (verifying an expected hash) and register them."""
        from modelops.artifacts import sha256_file

        if not Path(weights).is_file():
            raise NotFoundError(f"weights file {weights} does not exist")
        if expected_hash is not None:
            actual = sha256_file(weights)
            if actual != expected_hash:
                raise IntegrityError(
                    f"weights {weights} have sha256 {actual}, not the expected {expected_hash}"
                )
        ref = store.put_file(weights)
        return self.register_version(model_id, weights_hash=ref.sha256, weights_uri=ref.uri, **kw)

    # ------------------------------------------------------------------ register_candidate

    def find_candidate(self, model_id: str, training_run_id: str) -> ModelVersion | None:
        """The version this training run registered, or None (also for an unknown model):
        asked before training, so unchanged inputs are not trained again."""
        with db.read_tx(self.engine) as conn:
            try:
                self._spec(conn, model_id)
            except NotFoundError:
                return None
            found = conn.execute(Q_BY_RUN, {"m": model_id, "r": training_run_id}).scalar()
            return None if found is None else self._load_version(conn, model_id, int(found))

    def register_candidate(
        self,
        spec: ModelSpec,
        *,
        weights_hash: str,
        weights_uri: str,
        training_run_id: str,
        training_data: DatasetInput,
        eval_set: DatasetInput,
        contract: FeatureContract | None = None,
        parent: int | None = None,
        meta: VersionMeta | None = None,
        ensure_team_by: str | None = None,
        actor: str = "system",
    ) -> Candidate:
        """A trained candidate's whole registration in one transaction: owner team (when
        `ensure_team_by` vouches for it), model, contract, both datasets and the version.

        Each part writes the audit entry its own call writes, and a part already registered
        as given writes nothing, so a redelivery writes nothing at all. One training run is
        one version: a retrain of the same run (exports are not always byte-stable) returns
        the version it registered, `created=False`. A refusal anywhere leaves no row.
        """
        actor = self._require_actor(actor)
        team_by = actor_name(ensure_team_by) if ensure_team_by is not None else None
        meta = meta or VersionMeta()
        inputs = [_dataset_input(training_data, "dataset"), _dataset_input(eval_set, "eval_set")]
        _check_run_and_contract(training_run_id, None)
        for attempt in range(_RETRIES):
            try:
                return self._register_candidate(
                    spec,
                    weights_hash,
                    weights_uri,
                    training_run_id,
                    inputs,
                    contract,
                    parent,
                    meta,
                    team_by,
                    actor,
                )
            except DBAPIError as exc:
                self._spec_cache.pop(spec.model_id, None)
                state = getattr(exc.orig, "sqlstate", None)
                if not self._pg or state not in _RETRY_SQLSTATES or attempt == _RETRIES - 1:
                    raise
            except BaseException:
                # A rolled-back first registration must not leave its spec cached.
                self._spec_cache.pop(spec.model_id, None)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _register_candidate(
        self,
        spec: ModelSpec,
        weights_hash: str,
        weights_uri: str,
        run_id: str,
        inputs: list[DatasetInput],
        contract: FeatureContract | None,
        parent: int | None,
        meta: VersionMeta,
        team_by: str | None,
        actor: str,
    ) -> Candidate:
        model_id = spec.model_id
        with db.write_tx(self.engine) as conn:
            if team_by is not None:
                with self._write(team_by, within=conn) as op:
                    self._add_team(op, team_name(spec.owner_team))
            with self._write(actor, within=conn) as op:
                self._create_model(op, spec)
            contract_ref = None
            if contract is not None:
                with self._write(actor, within=conn) as op:
                    contract_ref = self._register_contract(op, contract)
            for d in inputs:
                assert d.kind is not None
                with self._write(actor, within=conn) as op:
                    self._register_dataset(op, d.name, d.version, d.uri, d.content_hash, d.kind)
            td, es = (DatasetRef(name=d.name, version=d.version) for d in inputs)
            with self._write(actor, model_id=model_id, lock="model", within=conn) as op:
                found = conn.execute(Q_BY_RUN, {"m": model_id, "r": run_id}).scalar()
                if found is not None:
                    mv = self._load_version(conn, model_id, int(found))
                    _same_run(mv, td, es, contract_ref)
                    op.unchanged(mv)
                else:
                    mv = self._add_version(
                        op, weights_hash, weights_uri, run_id, td, es, contract_ref, parent, meta
                    )
            prods = {}
            for s in spec.slices:
                raw = conn.execute(Q_DESIRED, {"m": model_id, "s": s}).scalar()
                prod = DesiredState.model_validate_json(raw).prod_version if raw else None
                if prod is not None and prod != mv.version:
                    prods[s] = prod
            return Candidate(
                version=mv, created=found is None, contract_ref=contract_ref, prod_versions=prods
            )

    # ------------------------------------------------------------------ reads

    def _load_version(self, conn: Connection, model_id: str, version: int) -> ModelVersion:
        spec = self._spec(conn, model_id)
        row = self._version_row(conn, model_id, version)
        rec = json.loads(row.record_json)
        states = conn.execute(
            select(slice_states.c.slice, slice_states.c.state, slice_states.c.percent).where(
                slice_states.c.model_id == model_id, slice_states.c.version == version
            )
        ).all()
        history = conn.execute(
            select(state_changes)
            .where(state_changes.c.model_id == model_id, state_changes.c.version == version)
            .order_by(state_changes.c.id)
        ).all()
        downs = (
            conn.execute(
                select(dependencies.c.downstream_model).where(
                    dependencies.c.upstream_model == model_id,
                    dependencies.c.upstream_version.in_([0, version]),
                )
            )
            .scalars()
            .all()
        )
        return ModelVersion(
            model_id=model_id,
            version=version,
            weights_uri=row.weights_uri,
            weights_hash=row.weights_hash,
            framework=row.framework,
            runtime_requirements=RuntimeRequirements.model_validate(rec["runtime_requirements"]),
            feature_contract_ref=row.feature_contract_ref,
            preprocess=load(CodeRef, rec.get("preprocess")),
            postprocess=load(CodeRef, rec.get("postprocess")),
            training_run_id=row.training_run_id,
            training_data_version=DatasetRef(**rec["training_data_version"]),
            training_code_version=load(CodeRef, rec.get("training_code_version")),
            parent_model_version=row.parent_version,
            eval_set_version=DatasetRef(**rec["eval_set_version"]),
            eval_metrics=rec.get("eval_metrics", {}),
            eval_slice_metrics=rec.get("eval_slice_metrics", {}),
            rollback_class=spec.rollback_class,
            rollback_snapshot_uri=rec.get("rollback_snapshot_uri"),
            drift_reference_uri=rec.get("drift_reference_uri"),
            drift_reference_hash=rec.get("drift_reference_hash"),
            tier=spec.tier,
            state={s.slice: State(s.state) for s in states},
            canary_percent={s.slice: s.percent for s in states if s.state == "CANARY"},
            state_history=[
                StateChange(
                    slice=h.slice,
                    state=State(h.state),
                    ts=datetime.fromisoformat(h.ts),
                    actor=h.actor,
                    percent=h.percent,
                    gate_results=json.loads(h.gate_results_json),
                    reason=h.reason,
                )
                for h in history
            ],
            downstream_dependents=sorted(set(downs)),
            signature=rec.get("signature", {}),
            checkpoint_at=rec.get("checkpoint_at"),
            created_at=datetime.fromisoformat(row.created_at),
        )

    def get_version(self, model_id: str, version: int) -> ModelVersion:
        with db.read_tx(self.engine) as conn:
            return self._load_version(conn, model_id, version)

    def list_versions(self, model_id: str) -> list[ModelVersion]:
        with db.read_tx(self.engine) as conn:
            self._spec(conn, model_id)
            vs = (
                conn.execute(
                    select(model_versions.c.version)
                    .where(model_versions.c.model_id == model_id)
                    .order_by(model_versions.c.version)
                )
                .scalars()
                .all()
            )
            return [self._load_version(conn, model_id, int(v)) for v in vs]

    def state_of(self, model_id: str, version: int, slice_: str = DEFAULT_SLICE) -> State:
        with db.read_tx(self.engine) as conn:
            row = self._state_row(conn, model_id, version, slice_)
            return State(row.state)

    def contract_check(self, model_id: str, version: int, schema: FeatureSchema) -> ContractCheck:
        """Invariant 1's question: can the store's current schema satisfy this version?"""
        v = self.get_version(model_id, version)
        if v.feature_contract_ref is None:
            raise NotFoundError(f"{model_id}@{version} declares no feature contract")
        return validate_contract(self.get_contract(v.feature_contract_ref), schema)


def _check_run_and_contract(training_run_id: str, contract_ref: str | None) -> None:
    if not training_run_id:
        raise SpecError("training_run_id is required: it makes registration idempotent")
    if contract_ref is not None:
        parse_contract_ref(contract_ref)


def _dataset_input(d: DatasetInput, role_kind: str) -> DatasetInput:
    """The role's kind filled in, the arguments checked and a local file hashed, before any
    transaction opens (hashing a large file must not hold the write lock)."""
    kind = d.kind or role_kind
    check_dataset_args(kind, d.version)
    return d.model_copy(
        update={"kind": kind, "content_hash": check_dataset_hash(d.uri, d.content_hash)}
    )


def _same_run(mv: ModelVersion, td: DatasetRef, es: DatasetRef, contract_ref: str | None) -> None:
    """A training run names one set of inputs; other inputs under its id are a caller's bug."""
    have = (mv.training_data_version, mv.eval_set_version, mv.feature_contract_ref)
    if have != (td, es, contract_ref):
        raise ConflictError(
            f"training run {mv.training_run_id} already registered {mv.model_id}@{mv.version} "
            f"from training data {have[0]}, eval set {have[1]}, contract {have[2] or 'none'}; "
            f"this call names {td}, {es}, {contract_ref or 'none'}; a new training run needs "
            "a new run id"
        )


def _new_version(
    spec: ModelSpec,
    version: int,
    weights_hash: str,
    weights_uri: str,
    training_run_id: str,
    td: DatasetRef,
    es: DatasetRef,
    contract_ref: str | None,
    parent: int | None,
    meta: VersionMeta,
    ts: datetime,
    actor: str,
    downstream: list[str],
) -> ModelVersion:
    return ModelVersion(
        model_id=spec.model_id,
        version=version,
        weights_uri=weights_uri,
        weights_hash=weights_hash,
        framework=spec.framework,
        runtime_requirements=meta.runtime_requirements,
        feature_contract_ref=contract_ref,
        preprocess=meta.preprocess,
        postprocess=meta.postprocess,
        training_run_id=training_run_id,
        training_data_version=td,
        training_code_version=meta.training_code_version,
        parent_model_version=parent,
        eval_set_version=es,
        eval_metrics=meta.eval_metrics,
        eval_slice_metrics=meta.eval_slice_metrics,
        rollback_class=spec.rollback_class,
        rollback_snapshot_uri=meta.rollback_snapshot_uri,
        drift_reference_uri=meta.drift_reference_uri,
        drift_reference_hash=meta.drift_reference_hash,
        tier=spec.tier,
        state={sl: State.REGISTERED for sl in spec.slices},
        state_history=[
            StateChange(slice=sl, state=State.REGISTERED, ts=ts, actor=actor, reason="registered")
            for sl in spec.slices
        ],
        downstream_dependents=downstream,
        signature=meta.signature,
        checkpoint_at=meta.checkpoint_at,
        created_at=ts,
    )
