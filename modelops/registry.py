"""The Registry: the one authority over versions, their per-slice states, lineage and audit.

Every mutation is one transaction holding the lock of what it changes, and writes its
state change, its desired state and exactly one audit entry together, so a crash or a
refusal leaves nothing partial behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, Field
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from modelops import audit as audit_mod
from modelops.contracts import (
    ContractCheck,
    FeatureContract,
    FeatureSchema,
    parse_contract_ref,
    validate_contract,
)
from modelops.desired import DesiredState, SliceRow, derive, last_good
from modelops.errors import (
    ApprovalRequired,
    ConflictError,
    IllegalTransition,
    IntegrityError,
    NotFoundError,
    PinnedError,
    SpecError,
)
from modelops.lifecycle import (
    FORWARD,
    ROLLBACK_SOURCES,
    SINGLETON_STATES,
    TRAFFIC_STATES,
    SliceContext,
    approvals_needed,
    check_transition,
    legal_next,
)
from modelops.spec import (
    DEFAULT_SLICE,
    CodeRef,
    DatasetRef,
    ModelSpec,
    ModelVersion,
    RollbackClass,
    RuntimeRequirements,
    ShadowMode,
    State,
    StateChange,
    Tier,
    VersionMeta,
    parse_name_version,
)
from modelops.store import db
from modelops.store.tables import (
    actors,
    approvals,
    audit_log,
    contract_features,
    dataset_pins,
    datasets,
    dependencies,
    feature_contracts,
    model_slices,
    model_versions,
    models,
    overrides,
    slice_states,
    state_changes,
    teams,
)

__all__ = [
    "Registry",
    "actor_name",
    "team_name",
    "non_finite",
    "LiveState",
    "DatasetRecord",
    "TransitionResult",
    "ApprovalRecord",
    "VersionKey",
    "ModelDependents",
]

Clock = Callable[[], datetime]
IRREVERSIBLE_OVERRIDE = "promote_irreversible"
SLO_NOT_MEASURED_OVERRIDE = "slo_not_measured"
OVERRIDE_KINDS = (IRREVERSIBLE_OVERRIDE, SLO_NOT_MEASURED_OVERRIDE)

# Hot-path statements, built once: constructing a statement costs more than running it.
_b = bindparam
_LIVE_STATES = [s.value for s in (*SINGLETON_STATES, State.DEPRECATED)]
_Q_SPEC = select(models.c.spec_json).where(models.c.model_id == _b("m"))
_Q_SPEC_LOCK = _Q_SPEC.with_for_update()
_Q_SLICE_LOCK = (
    select(model_slices)
    .where(model_slices.c.model_id == _b("m"), model_slices.c.slice == _b("s"))
    .with_for_update()
)
_Q_DESIRED = select(model_slices.c.desired_json).where(
    model_slices.c.model_id == _b("m"), model_slices.c.slice == _b("s")
)
_Q_STATE_ROW = select(slice_states).where(
    slice_states.c.model_id == _b("m"),
    slice_states.c.version == _b("v"),
    slice_states.c.slice == _b("s"),
)
_Q_SLICE_ROWS = select(
    slice_states.c.version, slice_states.c.state, slice_states.c.percent, slice_states.c.params_json
).where(
    slice_states.c.model_id == _b("m"),
    slice_states.c.slice == _b("s"),
    slice_states.c.state.in_(_LIVE_STATES),
)
_Q_CONTRACT_REFS = select(model_versions.c.version, model_versions.c.feature_contract_ref).where(
    model_versions.c.model_id == _b("m"), model_versions.c.version.in_(_b("vs", expanding=True))
)
_U_STATE = (
    update(slice_states)
    .where(
        slice_states.c.model_id == _b("m"),
        slice_states.c.version == _b("v"),
        slice_states.c.slice == _b("s"),
        slice_states.c.epoch == _b("old_epoch"),
    )
    .values(
        state=_b("state"),
        percent=_b("percent"),
        params_json=_b("params_json"),
        epoch=_b("epoch"),
        updated_at=_b("updated_at"),
    )
)
_I_STATE_CHANGE = insert(state_changes)
_Q_IDEMPOTENT = select(model_versions.c.version).where(
    model_versions.c.model_id == _b("m"),
    model_versions.c.weights_hash == _b("h"),
    model_versions.c.training_run_id == _b("r"),
)
_Q_NEXT_VERSION = select(models.c.next_version).where(models.c.model_id == _b("m"))
_U_NEXT_VERSION = update(models).where(models.c.model_id == _b("m")).values(next_version=_b("n"))
_Q_DATASET = select(datasets).where(datasets.c.name == _b("n"), datasets.c.version == _b("v"))
_Q_MODEL_EDGES = select(dependencies.c.downstream_model).where(
    dependencies.c.upstream_model == _b("m"), dependencies.c.upstream_version == 0
)
_U_DESIRED = (
    update(model_slices)
    .where(model_slices.c.model_id == _b("m"), model_slices.c.slice == _b("s"))
    .values(generation=_b("generation"), desired_json=_b("desired_json"), updated_at=_b("ts"))
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _j(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


class DatasetRecord(BaseModel):
    name: str
    version: int
    kind: str
    uri: str
    content_hash: str | None
    created_at: str


def _parse_ts(text: str) -> datetime:
    ts = datetime.fromisoformat(text)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


class LiveState(NamedTuple):
    """One version's state on one slice, as a fleet-wide scan returns it (sensors read these)."""

    model_id: str
    version: int
    slice: str
    state: State
    percent: int | None
    since: datetime


class VersionKey(NamedTuple):
    """A tuple, not a model: lookups return thousands, and each object is GC work."""

    model_id: str
    version: int

    def __str__(self) -> str:
        return f"{self.model_id}@{self.version}"


class TransitionResult(BaseModel):
    model_id: str
    version: int
    slice: str
    from_state: State
    to_state: State
    percent: int | None = None
    generation: int
    deprecated_version: int | None = None
    restored_version: int | None = None
    caveats: list[str] = Field(default_factory=list)
    audit_id: int
    changed: bool = True
    note: str = ""  # why nothing changed, when `changed` is False


class ApprovalRecord(BaseModel):
    model_id: str
    version: int
    slice: str
    target: State
    approver: str
    team: str
    epoch: int


class ModelDependents(BaseModel):
    model_id: str
    version: int
    child_versions: list[VersionKey]
    downstream_models: list[str]


class Registry:
    """Entry point for the CLI, the Dagster resources, the controller and the gateway."""

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        auto_upgrade: bool | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.url = db.resolve_url(url)
        self.engine = engine or db.make_engine(self.url)
        self.clock: Clock = clock or _utcnow
        if auto_upgrade is None:
            auto_upgrade = self.engine.dialect.name == "sqlite"
        db.ensure_schema(self.engine, auto_upgrade=auto_upgrade)
        self._pg = self.engine.dialect.name == "postgresql"
        self._spec_cache: dict[str, ModelSpec] = {}

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _now(self) -> datetime:
        ts = self.clock()
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)

    def _audit(self, conn: Connection, **kw: Any) -> int:
        return audit_mod.append(conn, **kw)

    def _spec(self, conn: Connection, model_id: str, *, lock: bool = False) -> ModelSpec:
        raw = conn.execute(_Q_SPEC_LOCK if lock else _Q_SPEC, {"m": model_id}).scalar()
        if raw is None:
            raise NotFoundError(
                f"unknown model {model_id!r}; "
                "create it first with `modelops model create SPEC.yaml`"
            )
        cached = self._spec_cache.get(model_id)
        if cached is None:
            cached = ModelSpec.model_validate_json(raw)
            self._spec_cache[model_id] = cached
        return cached

    @staticmethod
    def _require_actor(actor: str) -> str:
        return actor_name(actor)

    # ------------------------------------------------------------------ teams and actors

    def add_team(self, name: str, *, actor: str = "admin") -> str:
        """Teams are a known set, so a misspelt team cannot pass for another team."""
        team = team_name(name)
        actor = self._require_actor(actor)
        with db.write_tx(self.engine) as conn:
            if conn.execute(select(teams.c.name).where(teams.c.name == team)).first():
                return team
            ts = self._now()
            conn.execute(insert(teams).values(name=team, created_at=ts.isoformat()))
            self._audit(
                conn,
                model_id=None,
                version=None,
                action="add_team",
                ts=ts,
                actor=actor,
                payload={"name": team},
            )
        return team

    def list_teams(self) -> list[str]:
        with db.read_tx(self.engine) as conn:
            return sorted(self._known_teams(conn))

    @staticmethod
    def _known_teams(conn: Connection) -> set[str]:
        return set(conn.execute(select(teams.c.name)).scalars())

    def _require_team(
        self, conn: Connection, team: str, *, what: str = "team", where: str = ""
    ) -> str:
        known = self._known_teams(conn)
        if team not in known:
            raise NotFoundError(
                f"{where}unknown {what} {team!r}; known teams: "
                f"{', '.join(sorted(known)) or 'none'}; "
                f"add it with `modelops team add {team}`"
            )
        return team

    def add_actor(self, name: str, team: str, *, actor: str = "admin") -> None:
        """Actors and their teams are registered so approvals can prove team membership."""
        name = self._require_actor(name)
        team = team_name(team)
        with db.write_tx(self.engine) as conn:
            self._require_team(conn, team)
            row = conn.execute(select(actors).where(actors.c.name == name)).first()
            if row is not None:
                if row.team != team:
                    raise ConflictError(
                        f"actor {name!r} already exists in team {row.team!r}, not {team!r}"
                    )
                return
            ts = self._now()
            conn.execute(insert(actors).values(name=name, team=team, created_at=ts.isoformat()))
            self._audit(
                conn,
                model_id=None,
                version=None,
                action="add_actor",
                ts=ts,
                actor=self._require_actor(actor),
                payload={"name": name, "team": team},
            )

    def _actor_team(self, conn: Connection, name: str) -> str:
        team = conn.execute(select(actors.c.team).where(actors.c.name == name)).scalar()
        if team is None:
            raise NotFoundError(
                f"unknown actor {name!r}; register it with `modelops actor add {name} --team TEAM`"
            )
        return str(team)

    # ------------------------------------------------------------------ datasets

    def register_dataset(
        self,
        name: str,
        version: int,
        uri: str,
        *,
        content_hash: str | None = None,
        kind: str = "dataset",
        actor: str = "system",
    ) -> DatasetRecord:
        """Idempotent: the same (name, version, uri, hash) twice is one dataset."""
        if kind not in ("dataset", "eval_set"):
            raise SpecError(f"dataset kind {kind!r} is not allowed; allowed: dataset, eval_set")
        if version < 1:
            raise SpecError(f"dataset version {version} is not allowed; versions start at 1")
        content_hash = _check_dataset_hash(uri, content_hash)
        with db.write_tx(self.engine) as conn:
            row = conn.execute(
                select(datasets).where(datasets.c.name == name, datasets.c.version == version)
            ).first()
            if row is not None:
                same = (
                    row.uri == uri
                    and row.kind == kind
                    and (content_hash is None or row.content_hash == content_hash)
                )
                if not same:
                    raise ConflictError(
                        f"{kind} {name}@{version} already exists with uri {row.uri!r} and hash "
                        f"{row.content_hash}; dataset versions are immutable, "
                        "register a new version"
                    )
                return DatasetRecord(**row._mapping)
            ts = self._now()
            rec = DatasetRecord(
                name=name,
                version=version,
                kind=kind,
                uri=uri,
                content_hash=content_hash,
                created_at=ts.isoformat(),
            )
            conn.execute(insert(datasets).values(**rec.model_dump()))
            self._audit(
                conn,
                model_id=None,
                version=None,
                action="register_dataset",
                ts=ts,
                actor=self._require_actor(actor),
                payload=rec.model_dump(),
            )
            return rec

    def get_dataset(self, name: str, version: int) -> DatasetRecord:
        with db.read_tx(self.engine) as conn:
            return self._dataset(conn, name, version)

    def _dataset(self, conn: Connection, name: str, version: int) -> DatasetRecord:
        row = conn.execute(_Q_DATASET, {"n": name, "v": version}).first()
        if row is None:
            have = (
                conn.execute(
                    select(datasets.c.version)
                    .where(datasets.c.name == name)
                    .order_by(datasets.c.version)
                )
                .scalars()
                .all()
            )
            known = f"known versions: {', '.join(map(str, have))}" if have else "no such dataset"
            raise NotFoundError(f"unknown dataset {name}@{version}; {known}")
        return DatasetRecord(**row._mapping)

    def delete_dataset(self, name: str, version: int, *, actor: str) -> None:
        """Invariant 2: refused while any non-archived version references it."""
        actor = self._require_actor(actor)
        with db.write_tx(self.engine) as conn:
            rec = self._dataset(conn, name, version)
            holders = conn.execute(
                select(dataset_pins.c.model_id, dataset_pins.c.version, dataset_pins.c.role)
                .where(
                    dataset_pins.c.dataset_name == name, dataset_pins.c.dataset_version == version
                )
                .order_by(dataset_pins.c.model_id, dataset_pins.c.version)
            ).all()
            if holders:
                names = ", ".join(f"{h.model_id}@{h.version} ({h.role})" for h in holders)
                raise PinnedError(
                    f"{rec.kind} {name}@{version} is pinned by non-archived versions: {names}; "
                    "archive them first"
                )
            conn.execute(
                delete(datasets).where(datasets.c.name == name, datasets.c.version == version)
            )
            self._audit(
                conn,
                model_id=None,
                version=None,
                action="delete_dataset",
                ts=self._now(),
                actor=actor,
                payload=rec.model_dump(),
            )

    # ------------------------------------------------------------------ contracts

    def register_contract(self, contract: FeatureContract, *, actor: str = "system") -> str:
        """Contracts are immutable once registered: a change is a new version."""
        ref = contract.ref
        features = [f.model_dump(mode="json") for f in contract.features]
        with db.write_tx(self.engine) as conn:
            row = conn.execute(
                select(feature_contracts.c.features_json).where(
                    feature_contracts.c.name == contract.name,
                    feature_contracts.c.version == contract.version,
                )
            ).first()
            if row is not None:
                if json.loads(row.features_json) != features:
                    raise ConflictError(
                        f"feature contract {ref} already exists with other features; contracts "
                        "are immutable, register a new version"
                    )
                return ref
            ts = self._now()
            conn.execute(
                insert(feature_contracts).values(
                    name=contract.name,
                    version=contract.version,
                    features_json=_j(features),
                    created_at=ts.isoformat(),
                )
            )
            conn.execute(
                insert(contract_features),
                [{"contract_ref": ref, "feature_name": f.name} for f in contract.features],
            )
            self._audit(
                conn,
                model_id=None,
                version=None,
                action="register_contract",
                ts=ts,
                actor=self._require_actor(actor),
                payload={"ref": ref, "features": features},
            )
        return ref

    def get_contract(self, ref: str) -> FeatureContract:
        name, version = parse_contract_ref(ref)
        with db.read_tx(self.engine) as conn:
            row = conn.execute(
                select(feature_contracts.c.features_json).where(
                    feature_contracts.c.name == name, feature_contracts.c.version == version
                )
            ).first()
        if row is None:
            raise NotFoundError(f"unknown feature contract {ref}; register it first")
        return FeatureContract(name=name, version=version, features=json.loads(row.features_json))

    # ------------------------------------------------------------------ models

    def create_model(self, spec: ModelSpec, *, actor: str = "system") -> ModelSpec:
        """Idempotent for an identical spec; a different spec under the same id is a conflict."""
        actor = self._require_actor(actor)
        raw = spec.model_dump_json()
        with db.write_tx(self.engine) as conn:
            self._require_team(
                conn, spec.owner_team, what="owner_team", where=f"model {spec.model_id!r}: "
            )
            existing = conn.execute(
                select(models.c.spec_json).where(models.c.model_id == spec.model_id)
            ).scalar()
            if existing is not None:
                old = ModelSpec.model_validate_json(existing)
                if old == spec:
                    return old
                diff = sorted(
                    k for k in ModelSpec.model_fields if getattr(old, k) != getattr(spec, k)
                )
                raise ConflictError(
                    f"model {spec.model_id!r} already exists with a different spec "
                    f"(fields differ: {', '.join(diff)}); specs are changed by a migration "
                    "of the model, not by re-creating it"
                )
            ts = self._now()
            conn.execute(
                insert(models).values(
                    model_id=spec.model_id,
                    owner_team=spec.owner_team,
                    tier=spec.tier.value,
                    rollback_class=spec.rollback_class.value,
                    model_class=spec.model_class.value,
                    framework=spec.framework.value,
                    spec_json=raw,
                    next_version=1,
                    created_at=ts.isoformat(),
                )
            )
            for s in spec.slices:
                empty = DesiredState(model_id=spec.model_id, slice=s, generation=0)
                conn.execute(
                    insert(model_slices).values(
                        model_id=spec.model_id,
                        slice=s,
                        generation=0,
                        desired_json=empty.model_dump_json(),
                        updated_at=ts.isoformat(),
                    )
                )
            self._add_edges(conn, spec.model_id, 0, spec.downstream_dependents, ts)
            self._audit(
                conn,
                model_id=spec.model_id,
                version=None,
                action="register_model",
                ts=ts,
                actor=actor,
                payload=json.loads(raw),
            )
        return spec

    def get_model(self, model_id: str) -> ModelSpec:
        with db.read_tx(self.engine) as conn:
            return self._spec(conn, model_id)

    def list_models(self) -> list[str]:
        with db.read_tx(self.engine) as conn:
            return list(
                conn.execute(select(models.c.model_id).order_by(models.c.model_id)).scalars()
            )

    def _add_edges(
        self, conn: Connection, upstream: str, up_version: int, downs: Iterable[str], ts: datetime
    ) -> list[str]:
        added = []
        for d in sorted(set(downs)):
            if d == upstream:
                raise SpecError(f"model {upstream!r} cannot depend on itself")
            exists = conn.execute(
                select(func.count())
                .select_from(dependencies)
                .where(
                    dependencies.c.upstream_model == upstream,
                    dependencies.c.upstream_version == up_version,
                    dependencies.c.downstream_model == d,
                )
            ).scalar()
            if not exists:
                conn.execute(
                    insert(dependencies).values(
                        upstream_model=upstream,
                        upstream_version=up_version,
                        downstream_model=d,
                        created_at=ts.isoformat(),
                    )
                )
                added.append(d)
        return added

    def add_dependent(
        self, upstream: str, downstream: str, *, upstream_version: int | None = None, actor: str
    ) -> bool:
        """Declare that `downstream` consumes `upstream` (any version, or one version)."""
        actor = self._require_actor(actor)
        with db.write_tx(self.engine) as conn:
            self._spec(conn, upstream, lock=True)
            if upstream_version is not None:
                self._version_row(conn, upstream, upstream_version)
            ts = self._now()
            added = self._add_edges(conn, upstream, upstream_version or 0, [downstream], ts)
            if not added:
                return False
            self._audit(
                conn,
                model_id=upstream,
                version=upstream_version,
                action="add_dependent",
                ts=ts,
                actor=actor,
                payload={"downstream": downstream},
            )
            return True

    # ------------------------------------------------------------------ versions

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
        td = _as_ref(training_data, "--training-data")
        es = _as_ref(eval_set, "--eval-set")
        if not training_run_id:
            raise SpecError("training_run_id is required: it makes registration idempotent")
        if feature_contract_ref is not None:
            parse_contract_ref(feature_contract_ref)
        with db.write_tx(self.engine) as conn:
            spec = self._spec(conn, model_id, lock=True)
            found = conn.execute(
                _Q_IDEMPOTENT, {"m": model_id, "h": weights_hash, "r": training_run_id}
            ).scalar()
            if found is not None:
                return self._load_version(conn, model_id, int(found))
            for ref, kind, flag in ((td, "dataset", "training data"), (es, "eval_set", "eval set")):
                rec = self._dataset(conn, ref.name, ref.version)
                if rec.kind != kind:
                    raise SpecError(
                        f"{flag} {ref} is registered as a {rec.kind}; {flag} must be a {kind}"
                    )
            if feature_contract_ref is not None:
                name, ver = parse_contract_ref(feature_contract_ref)
                if (
                    conn.execute(
                        select(func.count())
                        .select_from(feature_contracts)
                        .where(feature_contracts.c.name == name, feature_contracts.c.version == ver)
                    ).scalar()
                    == 0
                ):
                    raise NotFoundError(
                        f"unknown feature contract {feature_contract_ref}; register it first"
                    )
            if parent is not None:
                self._version_row(conn, model_id, parent)
            version = int(conn.execute(_Q_NEXT_VERSION, {"m": model_id}).scalar_one())
            ts = self._now()
            record = {
                "runtime_requirements": meta.runtime_requirements.model_dump(mode="json"),
                "preprocess": _dump(meta.preprocess),
                "postprocess": _dump(meta.postprocess),
                "training_code_version": _dump(meta.training_code_version),
                "training_data_version": td.model_dump(),
                "eval_set_version": es.model_dump(),
                "eval_metrics": meta.eval_metrics,
                "eval_slice_metrics": meta.eval_slice_metrics,
                "rollback_snapshot_uri": meta.rollback_snapshot_uri,
                "signature": meta.signature,
            }
            conn.execute(_U_NEXT_VERSION, {"m": model_id, "n": version + 1})
            conn.execute(
                insert(model_versions).values(
                    model_id=model_id,
                    version=version,
                    weights_uri=weights_uri,
                    weights_hash=weights_hash,
                    framework=spec.framework.value,
                    feature_contract_ref=feature_contract_ref,
                    training_run_id=training_run_id,
                    parent_version=parent,
                    archived=False,
                    record_json=_j(record),
                    created_at=ts.isoformat(),
                )
            )
            ts_s = ts.isoformat()
            conn.execute(
                insert(slice_states),
                [
                    {
                        "model_id": model_id,
                        "version": version,
                        "slice": s,
                        "state": State.REGISTERED.value,
                        "percent": None,
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
                        "model_id": model_id,
                        "version": version,
                        "slice": s,
                        "from_state": None,
                        "state": State.REGISTERED.value,
                        "percent": None,
                        "ts": ts_s,
                        "actor": actor,
                        "reason": "registered",
                        "gate_results_json": "{}",
                    }
                    for s in spec.slices
                ],
            )
            pins = [(td, "training_data"), (es, "eval_set")]
            conn.execute(
                insert(dataset_pins),
                [
                    {
                        "dataset_name": r.name,
                        "dataset_version": r.version,
                        "model_id": model_id,
                        "version": version,
                        "role": role,
                    }
                    for r, role in pins
                ],
            )
            edges = self._add_edges(conn, model_id, version, meta.downstream_dependents, ts)
            self._audit(
                conn,
                model_id=model_id,
                version=version,
                action="register_version",
                ts=ts,
                actor=actor,
                payload={
                    "weights_hash": weights_hash,
                    "weights_uri": weights_uri,
                    "training_run_id": training_run_id,
                    "feature_contract_ref": feature_contract_ref,
                    "parent": parent,
                    "pins": [f"{r} ({role})" for r, role in pins],
                    "downstream_dependents": edges,
                },
            )
            # Built from what was just written, not read back: registration is a hot path.
            downs = conn.execute(_Q_MODEL_EDGES, {"m": model_id}).scalars().all()
            return ModelVersion(
                model_id=model_id,
                version=version,
                weights_uri=weights_uri,
                weights_hash=weights_hash,
                framework=spec.framework,
                runtime_requirements=meta.runtime_requirements,
                feature_contract_ref=feature_contract_ref,
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
                tier=spec.tier,
                state={sl: State.REGISTERED for sl in spec.slices},
                state_history=[
                    StateChange(
                        slice=sl, state=State.REGISTERED, ts=ts, actor=actor, reason="registered"
                    )
                    for sl in spec.slices
                ],
                downstream_dependents=sorted(set(downs) | set(meta.downstream_dependents)),
                signature=meta.signature,
                created_at=ts,
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

    def _version_row(self, conn: Connection, model_id: str, version: int) -> Any:
        row = conn.execute(
            select(model_versions).where(
                model_versions.c.model_id == model_id, model_versions.c.version == version
            )
        ).first()
        if row is None:
            self._spec(conn, model_id)
            latest = conn.execute(
                select(func.max(model_versions.c.version)).where(
                    model_versions.c.model_id == model_id
                )
            ).scalar()
            have = f"versions 1..{latest}" if latest else "no versions yet"
            raise NotFoundError(f"unknown version {model_id}@{version}; the model has {have}")
        return row

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
            preprocess=_load(CodeRef, rec.get("preprocess")),
            postprocess=_load(CodeRef, rec.get("postprocess")),
            training_run_id=row.training_run_id,
            training_data_version=DatasetRef(**rec["training_data_version"]),
            training_code_version=_load(CodeRef, rec.get("training_code_version")),
            parent_model_version=row.parent_version,
            eval_set_version=DatasetRef(**rec["eval_set_version"]),
            eval_metrics=rec.get("eval_metrics", {}),
            eval_slice_metrics=rec.get("eval_slice_metrics", {}),
            rollback_class=spec.rollback_class,
            rollback_snapshot_uri=rec.get("rollback_snapshot_uri"),
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

    # ------------------------------------------------------------------ lifecycle

    def _lock_slice(self, conn: Connection, model_id: str, slice_: str) -> Any:
        spec = self._spec(conn, model_id)
        row = conn.execute(_Q_SLICE_LOCK, {"m": model_id, "s": slice_}).first()
        if row is None:
            raise _unknown_slice(spec, slice_)
        return row

    def _state_row(self, conn: Connection, model_id: str, version: int, slice_: str) -> Any:
        row = conn.execute(_Q_STATE_ROW, {"m": model_id, "v": version, "s": slice_}).first()
        if row is None:
            self._version_row(conn, model_id, version)
            raise _unknown_slice(self._spec(conn, model_id), slice_)
        return row

    def _slice_rows(self, conn: Connection, model_id: str, slice_: str) -> list[SliceRow]:
        rows = conn.execute(_Q_SLICE_ROWS, {"m": model_id, "s": slice_}).all()
        return [
            SliceRow(r.version, State(r.state), r.percent, json.loads(r.params_json)) for r in rows
        ]

    def _context(
        self, conn: Connection, spec: ModelSpec, version: int, rows: list[SliceRow]
    ) -> SliceContext:
        occupied = {r.state: r.version for r in rows if r.state in SINGLETON_STATES}
        prod = occupied.get(State.PROMOTED)
        refresh = False
        if prod is not None and prod != version:
            refs = dict(
                conn.execute(_Q_CONTRACT_REFS, {"m": spec.model_id, "vs": [prod, version]}).all()
            )
            refresh = refs.get(prod) == refs.get(version)
        return SliceContext(
            tier=spec.tier,
            has_prod=prod is not None,
            ever_had_prod=prod is not None,
            is_weight_refresh=refresh,
            irreversible=spec.rollback_class is RollbackClass.IRREVERSIBLE,
            occupied=occupied,
        )

    def _set_state(
        self,
        conn: Connection,
        model_id: str,
        version: int,
        slice_: str,
        row: Any,
        target: State,
        *,
        percent: int | None,
        params: dict[str, Any],
        ts: datetime,
        actor: str,
        reason: str,
        gate_results: dict[str, Any] | None = None,
    ) -> None:
        res = conn.execute(
            _U_STATE,
            {
                "m": model_id,
                "v": version,
                "s": slice_,
                "old_epoch": row.epoch,
                "state": target.value,
                "percent": percent,
                "params_json": _j(params),
                "epoch": row.epoch + 1,
                "updated_at": ts.isoformat(),
            },
        )
        if res.rowcount != 1:  # a lost compare-and-set: the lock makes this unreachable
            raise ConflictError(f"{model_id}@{version} on slice {slice_!r} changed underneath us")
        conn.execute(
            _I_STATE_CHANGE,
            {
                "model_id": model_id,
                "version": version,
                "slice": slice_,
                "from_state": row.state,
                "state": target.value,
                "percent": percent,
                "ts": ts.isoformat(),
                "actor": actor,
                "reason": reason,
                "gate_results_json": _j(gate_results or {}),
            },
        )

    def _write_desired(
        self, conn: Connection, model_id: str, slice_: str, lock_row: Any, ts: datetime
    ) -> int:
        rows = self._slice_rows(conn, model_id, slice_)
        new = derive(model_id, slice_, lock_row.generation + 1, rows)
        old = DesiredState.model_validate_json(lock_row.desired_json)
        if new.content() == old.content():
            return int(lock_row.generation)
        conn.execute(
            _U_DESIRED,
            {
                "m": model_id,
                "s": slice_,
                "generation": new.generation,
                "desired_json": new.model_dump_json(),
                "ts": ts.isoformat(),
            },
        )
        return new.generation

    def _maybe_archive(self, conn: Connection, model_id: str, version: int) -> list[str]:
        """Archiving the last slice of a version releases its dataset pins (invariant 2)."""
        left = conn.execute(
            select(func.count())
            .select_from(slice_states)
            .where(
                slice_states.c.model_id == model_id,
                slice_states.c.version == version,
                slice_states.c.state != State.ARCHIVED.value,
            )
        ).scalar()
        if left:
            return []
        pins = conn.execute(
            select(
                dataset_pins.c.dataset_name, dataset_pins.c.dataset_version, dataset_pins.c.role
            ).where(dataset_pins.c.model_id == model_id, dataset_pins.c.version == version)
        ).all()
        conn.execute(
            delete(dataset_pins).where(
                dataset_pins.c.model_id == model_id, dataset_pins.c.version == version
            )
        )
        conn.execute(
            update(model_versions)
            .where(model_versions.c.model_id == model_id, model_versions.c.version == version)
            .values(archived=True)
        )
        return [f"{p.dataset_name}@{p.dataset_version} ({p.role})" for p in pins]

    def _check_approvals(
        self,
        conn: Connection,
        spec: ModelSpec,
        model_id: str,
        version: int,
        slice_: str,
        target: State,
        epoch: int,
        actor: str,
        needed: int,
        cross_team: bool,
    ) -> list[dict[str, str]]:
        rows = conn.execute(
            select(approvals.c.approver, approvals.c.team).where(
                approvals.c.model_id == model_id,
                approvals.c.version == version,
                approvals.c.slice == slice_,
                approvals.c.target_state == target.value,
                approvals.c.epoch == epoch,
            )
        ).all()
        # Rows are compared in their one spelling, and a team outside the known set (a row
        # left by a registry that did not validate teams) is no team, never "another team".
        known = self._known_teams(conn) if cross_team else set()
        own = any(_key(r.approver) == actor for r in rows)
        valid = [r for r in rows if _key(r.approver) != actor]
        outside = [r for r in valid if _key(r.team) in known and _key(r.team) != spec.owner_team]
        ok = len(valid) >= needed and (not cross_team or outside)
        if not ok:
            rule = f"{needed} approval{'s' if needed > 1 else ''} from distinct actors"
            if cross_team:
                rule += f", at least one outside team {spec.owner_team!r}"
            have = ", ".join(f"{r.approver} ({r.team})" for r in valid) or "none"
            note = f"; {actor}'s own approval does not count" if own else ""
            raise ApprovalRequired(
                f"{model_id}@{version} -> {target.value} on slice {slice_!r} at tier "
                f"{spec.tier.value} needs {rule}; have: {have}{note}; "
                f"run `modelops approve {model_id} {version} --slice {slice_} --to {target.value} "
                "--actor NAME`"
            )
        return [{"approver": r.approver, "team": r.team} for r in valid]

    def transition(
        self,
        model_id: str,
        version: int,
        target: State | str,
        *,
        actor: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002 - the domain's word
        expected: State | str | None = None,
        percent: int | None = None,
        reason: str = "",
        automated: bool = False,
        mode: ShadowMode | str | None = None,
        layer: str | None = None,
        gate_results: dict[str, Any] | None = None,
        expected_percent: int | None = None,
        _conn: Connection | None = None,
    ) -> TransitionResult:
        """Move one version on one slice, as a compare-and-set against `expected`.

        `expected_percent` extends the compare to the canary percent, so a step decided on
        a stale read of CANARY at one percent cannot move the canary backwards. `_conn` runs
        the move inside a caller's transaction that already holds the slice's lock.
        """
        actor = self._require_actor(actor)
        target = _state(target)
        expected_s = _state(expected) if expected is not None else None
        slice_ = slice
        with _within(_conn, self.engine) as conn:
            lock_row = self._lock_slice(conn, model_id, slice_)
            spec = self._spec(conn, model_id)
            row = self._state_row(conn, model_id, version, slice_)
            current = State(row.state)
            if (expected_s is not None and current is not expected_s) or (
                expected_percent is not None and row.percent != expected_percent
            ):
                pct = f" ({row.percent}%)" if row.percent is not None else ""
                want = (expected_s or current).value
                if expected_percent is not None:
                    want += f" ({expected_percent}%)"
                raise ConflictError(
                    f"conflict: {model_id}@{version} on slice {slice_!r} is {current.value}{pct}, "
                    f"not {want} as expected; re-read and retry"
                )
            rows = self._slice_rows(conn, model_id, slice_)
            ctx = self._context(conn, spec, version, rows)
            if target is State.CANARY and percent is None and current is not State.CANARY:
                percent = 1
            decision = check_transition(
                f"{model_id}@{version}",
                slice_,
                current,
                target,
                ctx,
                percent=percent,
                current_percent=row.percent,
                automated=automated,
            )
            ts = self._now()
            approved: list[dict[str, str]] = []
            if decision.approvals:
                approved = self._check_approvals(
                    conn,
                    spec,
                    model_id,
                    version,
                    slice_,
                    target,
                    row.epoch,
                    actor,
                    decision.approvals,
                    decision.cross_team,
                )
            override = None
            if (
                target is State.PROMOTED
                and spec.rollback_class is RollbackClass.IRREVERSIBLE
                and spec.tier in (Tier.L2, Tier.L3)
            ):
                override = conn.execute(
                    select(overrides.c.actor, overrides.c.reason).where(
                        overrides.c.model_id == model_id,
                        overrides.c.version == version,
                        overrides.c.slice == slice_,
                        overrides.c.target_state == target.value,
                        overrides.c.epoch == row.epoch,
                        overrides.c.kind == IRREVERSIBLE_OVERRIDE,
                    )
                ).first()
                if override is None:
                    raise IllegalTransition(
                        f"{model_id}@{version} is IRREVERSIBLE at tier {spec.tier.value}: "
                        "promotion needs an explicit override record (who and why); "
                        "run `modelops override "
                        f"{model_id} {version} --slice {slice_} --actor NAME --reason WHY`"
                    )
            if target is State.ROLLED_BACK and current is State.PROMOTED:
                return self._rollback_prod(
                    conn,
                    spec,
                    lock_row,
                    row,
                    version,
                    slice_,
                    rows,
                    ts,
                    actor,
                    reason,
                    automated,
                )
            params: dict[str, Any] = {}
            if target is State.SHADOW:
                params["mode"] = ShadowMode(mode or ShadowMode.live).value
                percent = percent or 100
            elif mode is not None:
                raise SpecError("--mode applies only to SHADOW; allowed: live, replay")
            if target is State.AB_TEST:
                params["layer"] = layer or f"{model_id}.{slice_}"
                percent = percent or 50
            elif layer is not None:
                raise SpecError("--layer applies only to AB_TEST")
            deprecated = None
            if target is State.PROMOTED:
                prod = ctx.occupied.get(State.PROMOTED)
                if prod is not None and prod != version:
                    prow = self._state_row(conn, model_id, prod, slice_)
                    self._set_state(
                        conn,
                        model_id,
                        prod,
                        slice_,
                        prow,
                        State.DEPRECATED,
                        percent=None,
                        params={"deprecated_at_gen": lock_row.generation + 1},
                        ts=ts,
                        actor=actor,
                        reason=f"replaced by version {version}",
                    )
                    deprecated = prod
            self._set_state(
                conn,
                model_id,
                version,
                slice_,
                row,
                target,
                percent=percent,
                params=params,
                ts=ts,
                actor=actor,
                reason=reason,
                gate_results=gate_results,
            )
            unpinned = (
                self._maybe_archive(conn, model_id, version) if (target is State.ARCHIVED) else []
            )
            generation = int(lock_row.generation)
            # A DEPRECATED version is the rollback target and kept warm, so archiving it
            # changes the desired state too.
            if (
                target in TRAFFIC_STATES
                or current in TRAFFIC_STATES
                or current is State.DEPRECATED
                or deprecated
            ):
                generation = self._write_desired(conn, model_id, slice_, lock_row, ts)
            action = "rollback" if target is State.ROLLED_BACK else "transition"
            payload: dict[str, Any] = {
                "slice": slice_,
                "from": current.value,
                "to": target.value,
                "percent": percent,
                "reason": reason,
                "automated": automated,
                "generation": generation,
            }
            if params:
                payload["params"] = params
            if approved:
                payload["approvals"] = approved
            if override is not None:
                payload["override"] = {"actor": override.actor, "reason": override.reason}
            if decision.skip:
                payload["skip"] = decision.skip
            if deprecated is not None:
                payload["deprecated"] = deprecated
            if unpinned:
                payload["unpinned"] = unpinned
            if gate_results:
                payload["gate_results"] = gate_results
            audit_id = self._audit(
                conn,
                model_id=model_id,
                version=version,
                action=action,
                ts=ts,
                actor=actor,
                payload=payload,
            )
            return TransitionResult(
                model_id=model_id,
                version=version,
                slice=slice_,
                from_state=current,
                to_state=target,
                percent=percent,
                generation=generation,
                deprecated_version=deprecated,
                audit_id=audit_id,
            )

    def _rollback_prod(
        self,
        conn: Connection,
        spec: ModelSpec,
        lock_row: Any,
        row: Any,
        version: int,
        slice_: str,
        rows: list[SliceRow],
        ts: datetime,
        actor: str,
        reason: str,
        automated: bool,
    ) -> TransitionResult:
        """PROMOTED -> ROLLED_BACK restores the last good version, and says what it cannot."""
        model_id = spec.model_id
        restored = last_good(rows)
        caveats: list[str] = []
        self._set_state(
            conn,
            model_id,
            version,
            slice_,
            row,
            State.ROLLED_BACK,
            percent=None,
            params={},
            ts=ts,
            actor=actor,
            reason=reason,
        )
        if restored is not None:
            rrow = self._state_row(conn, model_id, restored, slice_)
            self._set_state(
                conn,
                model_id,
                restored,
                slice_,
                rrow,
                State.PROMOTED,
                percent=None,
                params={},
                ts=ts,
                actor=actor,
                reason=f"restored by rollback of version {version}",
            )
        else:
            caveats.append(
                f"no earlier version was promoted on slice {slice_!r}: the slice now has no "
                "prod version"
            )
        rc = spec.rollback_class
        if rc is RollbackClass.STATE_SNAPSHOT:
            snap = json.loads(self._version_row(conn, model_id, version).record_json).get(
                "rollback_snapshot_uri"
            )
            caveats.append(
                f"traffic only: state written while version {version} served must be restored "
                + (f"from snapshot {snap}" if snap else "but no snapshot was recorded")
            )
        elif rc is RollbackClass.IRREVERSIBLE:
            caveats.append(
                f"traffic only: version {version} is IRREVERSIBLE; what it already did cannot "
                "be undone"
            )
        generation = self._write_desired(conn, model_id, slice_, lock_row, ts)
        audit_id = self._audit(
            conn,
            model_id=model_id,
            version=version,
            action="rollback",
            ts=ts,
            actor=actor,
            payload={
                "slice": slice_,
                "from": State.PROMOTED.value,
                "to": State.ROLLED_BACK.value,
                "restored": restored,
                "rollback_class": rc.value,
                "caveats": caveats,
                "reason": reason,
                "automated": automated,
                "generation": generation,
            },
        )
        return TransitionResult(
            model_id=model_id,
            version=version,
            slice=slice_,
            from_state=State.PROMOTED,
            to_state=State.ROLLED_BACK,
            generation=generation,
            restored_version=restored,
            caveats=caveats,
            audit_id=audit_id,
        )

    def rollback(
        self,
        model_id: str,
        *,
        actor: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        reason: str = "",
        automated: bool = False,
        expected_version: int | None = None,
        expected: State | str | None = None,
    ) -> TransitionResult:
        """Roll back one version on the slice, chosen and moved under one lock.

        Named (`expected_version`): that version. If it is already ROLLED_BACK the answer is
        that rollback (`changed=False`, nothing written), so a retry or a duplicate is
        harmless; `expected` makes it a strict compare-and-set on the state instead.
        Bare: the live candidate (CANARY, AB_TEST, SHADOW), else prod; or, with `expected`,
        the version holding that state. A bare rollback undoes the slice's latest serving
        change once: if that change already was a rollback, the answer is that rollback.
        A second responder (or a retry) cannot be told from a deliberate second rollback,
        so going further back names its version.
        """
        actor = self._require_actor(actor)
        expected_s = _state(expected) if expected is not None else None
        slice_ = slice
        with db.write_tx(self.engine) as conn:
            lock_row = self._lock_slice(conn, model_id, slice_)
            rows = sorted(self._slice_rows(conn, model_id, slice_), key=lambda r: r.version)
            if expected_version is not None:
                version = expected_version
                row = self._state_row(conn, model_id, version, slice_)
                current = State(row.state)
                if expected_s is not None:
                    current = expected_s  # transition() compares it under this lock
                elif current is State.ROLLED_BACK and (
                    done := self._last_rollback(conn, model_id, slice_, version)
                ):
                    return _already(lock_row, done, rows)
                elif current not in ROLLBACK_SOURCES:
                    pct = f" ({row.percent}%)" if row.percent is not None else ""
                    sources = ", ".join(s.value for s in State if s in ROLLBACK_SOURCES)
                    raise ConflictError(
                        f"conflict: {model_id}@{version} on slice {slice_!r} is "
                        f"{current.value}{pct}, not in a state a rollback applies to "
                        f"({sources}); re-read and retry"
                    )
            elif expected_s is not None:
                if expected_s not in SINGLETON_STATES:
                    raise IllegalTransition(
                        f"several versions of {model_id} may be in {expected_s.value} on slice "
                        f"{slice_!r}; name the version to roll back (--version N)"
                    )
                holder = next((r for r in rows if r.state is expected_s), None)
                if holder is None:
                    live = ", ".join(f"{r.version} {r.state.value}" for r in rows) or "none"
                    raise ConflictError(
                        f"conflict: no version of {model_id} is in {expected_s.value} on slice "
                        f"{slice_!r} (live: {live}); re-read and retry"
                    )
                version, current = holder.version, expected_s
            else:
                last = self._last_serving_change(conn, model_id, slice_)
                if last is not None and last.action == "rollback":
                    return _already(lock_row, last, rows)
                by_state = {r.state: r for r in rows}
                pick = next(
                    (by_state[s] for s in _BARE_ROLLBACK_ORDER if s in by_state), None
                )
                if pick is None:
                    raise IllegalTransition(
                        f"nothing to roll back for {model_id!r} on slice {slice_!r}: no version "
                        "is in SHADOW, CANARY, AB_TEST or PROMOTED"
                    )
                version, current = pick.version, pick.state
            return self.transition(
                model_id,
                version,
                State.ROLLED_BACK,
                actor=actor,
                slice=slice_,
                expected=current,
                reason=reason,
                automated=automated,
                _conn=conn,
            )

    def _serving_changes(
        self, conn: Connection, model_id: str, slice_: str
    ) -> Iterator[_AuditRef]:
        """The slice's transitions and rollbacks, newest first, read a page at a time."""
        q = (
            select(
                audit_log.c.id,
                audit_log.c.seq,
                audit_log.c.version,
                audit_log.c.action,
                audit_log.c.actor,
                audit_log.c.ts,
                audit_log.c.payload,
            )
            .where(
                audit_log.c.chain == audit_mod.chain_for(model_id),
                audit_log.c.action.in_(("transition", "rollback")),
                audit_log.c.seq < _b("below"),
            )
            .order_by(audit_log.c.seq.desc())
            .limit(64)
        )
        below = 2**31 - 1
        while True:
            page = conn.execute(q, {"below": below}).all()
            for r in page:
                payload = json.loads(r.payload)
                if payload.get("slice") == slice_:
                    yield _AuditRef(r.id, r.version, r.action, r.actor, r.ts, payload)
            if len(page) < 64:
                return
            below = page[-1].seq

    def _last_serving_change(
        self, conn: Connection, model_id: str, slice_: str
    ) -> _AuditRef | None:
        """The newest entry that changed what the slice serves (a traffic state on either
        side), which is what a bare rollback would undo."""
        traffic = {s.value for s in TRAFFIC_STATES}
        for e in self._serving_changes(conn, model_id, slice_):
            if e.payload.get("from") in traffic or e.payload.get("to") in traffic:
                return e
        return None

    def _last_rollback(
        self, conn: Connection, model_id: str, slice_: str, version: int
    ) -> _AuditRef | None:
        for e in self._serving_changes(conn, model_id, slice_):
            if e.action == "rollback" and e.version == version:
                return e
        return None

    def record_gate_result(
        self,
        model_id: str,
        version: int,
        *,
        passed: bool,
        results: dict[str, Any],
        actor: str = "system:gates",
    ) -> list[TransitionResult]:
        """Offline gates move REGISTERED to OFFLINE_PASSED or FAILED on every slice at once.

        A version is gated once. A redelivered identical result is a no-op, because
        orchestrator events repeat; a different one is a conflict naming both, never a
        silent drop, since the first verdict is what the version was promoted on.
        """
        actor = self._require_actor(actor)
        _check_finite(results)
        target = State.OFFLINE_PASSED if passed else State.FAILED
        with db.write_tx(self.engine) as conn:
            spec = self._spec(conn, model_id)
            for s in sorted(spec.slices):
                self._lock_slice(conn, model_id, s)
            srows = {s: self._state_row(conn, model_id, version, s) for s in spec.slices}
            states = {s: State(r.state) for s, r in srows.items()}
            first = conn.execute(
                select(state_changes.c.state, state_changes.c.gate_results_json)
                .where(
                    state_changes.c.model_id == model_id,
                    state_changes.c.version == version,
                    state_changes.c.from_state == State.REGISTERED.value,
                    state_changes.c.state.in_([State.OFFLINE_PASSED.value, State.FAILED.value]),
                )
                .order_by(state_changes.c.id)
                .limit(1)
            ).first()
            if first is not None:
                was_passed = first.state == State.OFFLINE_PASSED.value
                old = (was_passed, json.loads(first.gate_results_json))
                new = (passed, json.loads(_j(results)))
                if old == new:
                    return []
                raise ConflictError(
                    f"conflict: {model_id}@{version} already has a gate result, "
                    f"{_verdict(*old)}; this one is {_verdict(*new)}; a version is gated once: "
                    "register a new version to gate again"
                )
            bad = {s: st for s, st in states.items() if st is not State.REGISTERED}
            if bad:
                where = ", ".join(f"{s}={st.value}" for s, st in sorted(bad.items()))
                raise IllegalTransition(
                    f"{model_id}@{version}: gate results apply only to REGISTERED versions; "
                    f"it is {where}"
                )
            ts = self._now()
            for s, r in srows.items():
                self._set_state(
                    conn,
                    model_id,
                    version,
                    s,
                    r,
                    target,
                    percent=None,
                    params={},
                    ts=ts,
                    actor=actor,
                    reason="offline gates",
                    gate_results=results,
                )
            audit_id = self._audit(
                conn,
                model_id=model_id,
                version=version,
                action="gate_result",
                ts=ts,
                actor=actor,
                payload={"passed": passed, "to": target.value, "results": results},
            )
            return [
                TransitionResult(
                    model_id=model_id,
                    version=version,
                    slice=s,
                    from_state=State.REGISTERED,
                    to_state=target,
                    generation=0,
                    audit_id=audit_id,
                )
                for s in sorted(spec.slices)
            ]

    def approve(
        self,
        model_id: str,
        version: int,
        *,
        actor: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        target: State | str | None = None,
    ) -> ApprovalRecord:
        """Approve the next gated move of this version on this slice, at its current state.

        An approval binds to the state it was given in (its epoch): once the version moves,
        old approvals no longer count.
        """
        actor = self._require_actor(actor)
        slice_ = slice
        with db.write_tx(self.engine) as conn:
            self._lock_slice(conn, model_id, slice_)
            spec = self._spec(conn, model_id)
            team = self._actor_team(conn, actor)
            row = self._state_row(conn, model_id, version, slice_)
            current = State(row.state)
            rows = self._slice_rows(conn, model_id, slice_)
            ctx = self._context(conn, spec, version, rows)
            gated = [
                s
                for s in legal_next(current, ctx)
                if approvals_needed(current, s, ctx)[0]
                and s not in (State.ARCHIVED, State.ROLLED_BACK)
            ]
            if target is None:
                if len(gated) == 1:
                    tgt = gated[0]
                elif FORWARD.get(current) in gated:
                    tgt = FORWARD[current]
                else:
                    opts = ", ".join(s.value for s in gated) or "none"
                    raise IllegalTransition(
                        f"{model_id}@{version} on slice {slice_!r} is {current.value}; no single "
                        f"next move needs approval at tier {spec.tier.value} (gated: {opts}); "
                        "name one with --to STATE"
                    )
            else:
                tgt = _state(target)
                n, _ = approvals_needed(current, tgt, ctx)
                if tgt not in legal_next(current, ctx):
                    allowed = ", ".join(s.value for s in legal_next(current, ctx))
                    raise IllegalTransition(
                        f"{model_id}@{version} on slice {slice_!r}: {current.value} -> "
                        f"{tgt.value} is not allowed; legal next states: {allowed}"
                    )
                if not n:
                    raise IllegalTransition(
                        f"{current.value} -> {tgt.value} needs no approval at tier "
                        f"{spec.tier.value}"
                    )
            dup = conn.execute(
                select(func.count())
                .select_from(approvals)
                .where(
                    approvals.c.model_id == model_id,
                    approvals.c.version == version,
                    approvals.c.slice == slice_,
                    approvals.c.target_state == tgt.value,
                    approvals.c.epoch == row.epoch,
                    approvals.c.approver == actor,
                )
            ).scalar()
            if dup:
                raise ConflictError(
                    f"{actor} already approved {model_id}@{version} -> {tgt.value} on slice "
                    f"{slice_!r}; a second approval must come from another actor"
                )
            ts = self._now()
            rec = ApprovalRecord(
                model_id=model_id,
                version=version,
                slice=slice_,
                target=tgt,
                approver=actor,
                team=team,
                epoch=row.epoch,
            )
            conn.execute(
                insert(approvals).values(
                    model_id=model_id,
                    version=version,
                    slice=slice_,
                    target_state=tgt.value,
                    epoch=row.epoch,
                    approver=actor,
                    team=team,
                    ts=ts.isoformat(),
                )
            )
            self._audit(
                conn,
                model_id=model_id,
                version=version,
                action="approval",
                ts=ts,
                actor=actor,
                payload={"slice": slice_, "from": current.value, "to": tgt.value, "team": team},
            )
            return rec

    def override(
        self,
        model_id: str,
        version: int,
        *,
        actor: str,
        reason: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
        kind: str = IRREVERSIBLE_OVERRIDE,
    ) -> None:
        """Record who takes responsibility, and why: for promoting an IRREVERSIBLE model (the
        default kind), or (`slo_not_measured`) for passing an L2/L3 version whose latency and
        memory SLO could not be measured, given while it awaits its offline gates."""
        actor = self._require_actor(actor)
        if kind not in OVERRIDE_KINDS:
            raise SpecError(
                f"override kind {kind!r} is not allowed; allowed: {', '.join(OVERRIDE_KINDS)}"
            )
        if not reason or not reason.strip():
            raise SpecError("an override needs a reason (--reason WHY)")
        with db.write_tx(self.engine) as conn:
            self._lock_slice(conn, model_id, slice)
            spec = self._spec(conn, model_id)
            team = self._actor_team(conn, actor)
            if (
                kind == IRREVERSIBLE_OVERRIDE
                and spec.rollback_class is not RollbackClass.IRREVERSIBLE
            ):
                raise IllegalTransition(
                    f"model {model_id!r} is {spec.rollback_class.value}; overrides are only for "
                    "IRREVERSIBLE models"
                )
            if kind == SLO_NOT_MEASURED_OVERRIDE and spec.tier not in (Tier.L2, Tier.L3):
                raise IllegalTransition(
                    f"model {model_id!r} is {spec.tier.value}; an unmeasured SLO blocks only at "
                    "L2 and L3, so there is nothing to override"
                )
            row = self._state_row(conn, model_id, version, slice)
            target = State.PROMOTED
            if kind == SLO_NOT_MEASURED_OVERRIDE:
                target = State.OFFLINE_PASSED
                if row.state != State.REGISTERED.value:
                    raise IllegalTransition(
                        f"{model_id}@{version} is {row.state} on slice {slice!r}; an SLO override "
                        "is given while the version awaits its offline gates (REGISTERED)"
                    )
            ts = self._now()
            conn.execute(
                insert(overrides).values(
                    model_id=model_id,
                    version=version,
                    slice=slice,
                    target_state=target.value,
                    epoch=row.epoch,
                    kind=kind,
                    actor=actor,
                    reason=reason,
                    ts=ts.isoformat(),
                )
            )
            self._audit(
                conn,
                model_id=model_id,
                version=version,
                action="override",
                ts=ts,
                actor=actor,
                payload={
                    "slice": slice,
                    "kind": kind,
                    "reason": reason,
                    "team": team,
                    "at_state": row.state,
                },
            )

    # ------------------------------------------------------------------ pins

    def pin(self, model_id: str, version: int, dataset: str, *, role: str, actor: str) -> bool:
        """Pin another dataset version to a model version (e.g. an extra eval set)."""
        actor = self._require_actor(actor)
        ref = _as_ref(dataset, "dataset")
        with db.write_tx(self.engine) as conn:
            self._spec(conn, model_id, lock=True)
            vrow = self._version_row(conn, model_id, version)
            if vrow.archived:
                raise IllegalTransition(f"{model_id}@{version} is archived; it pins nothing")
            self._dataset(conn, ref.name, ref.version)
            key = and_(
                dataset_pins.c.dataset_name == ref.name,
                dataset_pins.c.dataset_version == ref.version,
                dataset_pins.c.model_id == model_id,
                dataset_pins.c.version == version,
                dataset_pins.c.role == role,
            )
            if conn.execute(select(func.count()).select_from(dataset_pins).where(key)).scalar():
                return False
            conn.execute(
                insert(dataset_pins).values(
                    dataset_name=ref.name,
                    dataset_version=ref.version,
                    model_id=model_id,
                    version=version,
                    role=role,
                )
            )
            self._audit(
                conn,
                model_id=model_id,
                version=version,
                action="pin",
                ts=self._now(),
                actor=actor,
                payload={"dataset": str(ref), "role": role},
            )
            return True

    def unpin(self, model_id: str, version: int, dataset: str, *, role: str, actor: str) -> None:
        actor = self._require_actor(actor)
        ref = _as_ref(dataset, "dataset")
        if role in ("training_data", "eval_set"):
            raise IllegalTransition(
                f"the {role} pin of {model_id}@{version} is part of its lineage; it is released "
                "only by archiving the version"
            )
        with db.write_tx(self.engine) as conn:
            self._spec(conn, model_id, lock=True)
            res = conn.execute(
                delete(dataset_pins).where(
                    dataset_pins.c.dataset_name == ref.name,
                    dataset_pins.c.dataset_version == ref.version,
                    dataset_pins.c.model_id == model_id,
                    dataset_pins.c.version == version,
                    dataset_pins.c.role == role,
                )
            )
            if res.rowcount == 0:
                raise NotFoundError(f"{model_id}@{version} has no {role} pin on {ref}")
            self._audit(
                conn,
                model_id=model_id,
                version=version,
                action="unpin",
                ts=self._now(),
                actor=actor,
                payload={"dataset": str(ref), "role": role},
            )

    # ------------------------------------------------------------------ desired state

    def live_states(self, states: Iterable[State | str] | None = None) -> list[LiveState]:
        """Every (model, version, slice) in one of `states`, fleet-wide, in one query.

        Sensors call this each tick over hundreds of models, so it is one indexed scan and
        no per-model round trips. `since` is when the version entered its current state.
        """
        wanted = [_state(s).value for s in states] if states is not None else None
        q = select(
            slice_states.c.model_id,
            slice_states.c.version,
            slice_states.c.slice,
            slice_states.c.state,
            slice_states.c.percent,
            slice_states.c.updated_at,
        )
        if wanted is not None:
            q = q.where(slice_states.c.state.in_(wanted))
        q = q.order_by(slice_states.c.model_id, slice_states.c.slice, slice_states.c.version)
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(q).all()
        return [
            LiveState(
                r.model_id,
                int(r.version),
                r.slice,
                State(r.state),
                r.percent,
                _parse_ts(r.updated_at),
            )
            for r in rows
        ]

    def record_alert(
        self,
        model_id: str,
        *,
        kind: str,
        detail: str,
        payload: dict[str, Any] | None = None,
        actor: str = "system:alerts",
    ) -> int:
        """An event the control plane must not lose (a failed rollback run, say), as an
        audit entry on the model's chain, so it is tamper-evident like every action."""
        actor = self._require_actor(actor)
        if not kind or not kind.strip():
            raise SpecError("an alert needs a kind, e.g. rollback_failed")
        with db.write_tx(self.engine) as conn:
            self._spec(conn, model_id)
            return self._audit(
                conn,
                model_id=model_id,
                version=None,
                action="alert",
                ts=self._now(),
                actor=actor,
                payload={"kind": kind, "detail": detail, **(payload or {})},
            )

    def desired_state(self, model_id: str, slice: str = DEFAULT_SLICE) -> DesiredState:  # noqa: A002
        with self.engine.connect() as conn:
            raw = conn.execute(_Q_DESIRED, {"m": model_id, "s": slice}).scalar()
            if raw is None:
                raise _unknown_slice(self._spec(conn, model_id), slice)
        return DesiredState.model_validate_json(raw)

    def all_desired_states(self) -> list[DesiredState]:
        with db.read_tx(self.engine) as conn:
            rows = conn.execute(
                select(model_slices.c.desired_json).order_by(
                    model_slices.c.model_id, model_slices.c.slice
                )
            ).scalars()
            return [DesiredState.model_validate_json(r) for r in rows]

    def contract_check(self, model_id: str, version: int, schema: FeatureSchema) -> ContractCheck:
        """Invariant 1's question: can the store's current schema satisfy this version?"""
        v = self.get_version(model_id, version)
        if v.feature_contract_ref is None:
            raise NotFoundError(f"{model_id}@{version} declares no feature contract")
        return validate_contract(self.get_contract(v.feature_contract_ref), schema)

    # ------------------------------------------------------------------ lineage

    def dependents_of_feature(self, feature: str) -> list[VersionKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(model_versions.c.model_id, model_versions.c.version)
                .join(
                    contract_features,
                    contract_features.c.contract_ref == model_versions.c.feature_contract_ref,
                )
                .where(contract_features.c.feature_name == feature, ~model_versions.c.archived)
                .order_by(model_versions.c.model_id, model_versions.c.version)
            ).all()
        return [VersionKey(model_id=r.model_id, version=r.version) for r in rows]

    def dependents_of_dataset(self, name: str, version: int) -> list[VersionKey]:
        with self.engine.connect() as conn:
            self._dataset(conn, name, version)
            rows = conn.execute(
                select(dataset_pins.c.model_id, dataset_pins.c.version)
                .where(
                    dataset_pins.c.dataset_name == name, dataset_pins.c.dataset_version == version
                )
                .distinct()
                .order_by(dataset_pins.c.model_id, dataset_pins.c.version)
            ).all()
        return [VersionKey(model_id=r.model_id, version=r.version) for r in rows]

    def dependents_of_model(self, model_id: str, version: int) -> ModelDependents:
        with self.engine.connect() as conn:
            self._version_row(conn, model_id, version)
            children = (
                conn.execute(
                    select(model_versions.c.version)
                    .where(
                        model_versions.c.model_id == model_id,
                        model_versions.c.parent_version == version,
                        ~model_versions.c.archived,
                    )
                    .order_by(model_versions.c.version)
                )
                .scalars()
                .all()
            )
            downs = (
                conn.execute(
                    select(dependencies.c.downstream_model)
                    .where(
                        dependencies.c.upstream_model == model_id,
                        dependencies.c.upstream_version.in_([0, version]),
                    )
                    .distinct()
                    .order_by(dependencies.c.downstream_model)
                )
                .scalars()
                .all()
            )
        return ModelDependents(
            model_id=model_id,
            version=version,
            child_versions=[VersionKey(model_id=model_id, version=c) for c in children],
            downstream_models=list(downs),
        )

    def transitive_dependents(self, model_id: str) -> list[str]:
        """Every model downstream of this one; UNION (not ALL) makes cycles terminate."""
        q = text(
            "WITH RECURSIVE closure(model) AS ("
            " SELECT downstream_model FROM dependencies WHERE upstream_model = :m"
            " UNION"
            " SELECT d.downstream_model FROM dependencies d JOIN closure c"
            " ON d.upstream_model = c.model"
            ") SELECT model FROM closure ORDER BY model"
        )
        with self.engine.connect() as conn:
            self._spec(conn, model_id)
            return [m for m in conn.execute(q, {"m": model_id}).scalars() if m != model_id]

    def lineage(self, model_id: str) -> dict[str, Any]:
        """The model's lineage as plain JSON: specs, versions, datasets, contracts, edges."""
        spec = self.get_model(model_id)
        versions = self.list_versions(model_id)
        with db.read_tx(self.engine) as conn:
            pins = conn.execute(
                select(dataset_pins).where(dataset_pins.c.model_id == model_id)
            ).all()
            upstream = conn.execute(
                select(dependencies.c.upstream_model, dependencies.c.upstream_version).where(
                    dependencies.c.downstream_model == model_id
                )
            ).all()
        return {
            "model": spec.model_dump(mode="json"),
            "versions": [
                {
                    "version": v.version,
                    "weights_hash": v.weights_hash,
                    "training_data": str(v.training_data_version),
                    "eval_set": str(v.eval_set_version),
                    "parent": v.parent_model_version,
                    "feature_contract": v.feature_contract_ref,
                    "training_run_id": v.training_run_id,
                    "code": {
                        k: _dump(getattr(v, k))
                        for k in ("preprocess", "postprocess", "training_code_version")
                    },
                    "state": {k: s.value for k, s in v.state.items()},
                    "pins": sorted(
                        f"{p.dataset_name}@{p.dataset_version} ({p.role})"
                        for p in pins
                        if p.version == v.version
                    ),
                }
                for v in versions
            ],
            "downstream_models": self.transitive_dependents(model_id),
            "upstream_models": sorted(
                {
                    f"{u.upstream_model}" + (f"@{u.upstream_version}" if u.upstream_version else "")
                    for u in upstream
                }
            ),
        }

    # ------------------------------------------------------------------ audit

    def audit_entries(self, model_id: str | None = None) -> list[audit_mod.AuditEntry]:
        chain = audit_mod.chain_for(model_id)
        with db.read_tx(self.engine) as conn:
            if model_id is not None:
                self._spec(conn, model_id)
            rows = conn.execute(
                select(audit_log).where(audit_log.c.chain == chain).order_by(audit_log.c.seq)
            ).all()
        return [
            audit_mod.AuditEntry(
                id=r.id,
                chain=r.chain,
                seq=r.seq,
                model_id=r.model_id,
                version=r.version,
                action=r.action,
                ts=r.ts,
                actor=r.actor,
                payload=json.loads(r.payload),
                hash=r.hash,
            )
            for r in rows
        ]

    def verify_audit(self, model_id: str | None = None) -> audit_mod.AuditReport:
        """Check one model's chain, or every chain in the registry, and what they replay to.

        A chain whose hashes, links or head do not hold is reported as such and not
        replayed (its replay would only repeat the damage). An intact chain is replayed and
        every table row it describes is compared with it: states and percents, desired
        state, approvals, overrides, specs and versions, and (registry-wide) teams, actors,
        datasets and contracts. A model row whose chain is gone is named too.
        """
        with db.read_tx(self.engine) as conn:
            if model_id is not None:
                self._spec(conn, model_id)
                model_ids = [model_id]
                chains = [audit_mod.chain_for(model_id)]
            else:
                model_ids = list(conn.execute(select(models.c.model_id)).scalars())
                chains = sorted(
                    set(conn.execute(select(audit_log.c.chain).distinct()).scalars())
                    | set(conn.execute(text("SELECT chain FROM audit_heads")).scalars())
                    | {audit_mod.chain_for(m) for m in model_ids}
                )
            total = 0
            counted = 0
            problems: list[audit_mod.AuditProblem] = []
            for c in chains:
                rows, p = audit_mod.check_chain(conn, c)
                total += len(rows)
                mid = c.removeprefix("model:") if c.startswith("model:") else None
                if not rows and not p and mid is not None:
                    has_head = conn.execute(
                        text("SELECT 1 FROM audit_heads WHERE chain = :c"), {"c": c}
                    ).first()
                    if has_head is None:
                        problems.append(audit_mod.missing_chain(mid))
                        counted += 1
                        continue
                counted += 1 if (rows or p) else 0
                problems.extend(p)
                if p:
                    continue
                if mid is not None:
                    problems.extend(audit_mod.cross_check_model(conn, mid, list(rows)))
                elif c == audit_mod.REGISTRY_CHAIN:
                    problems.extend(audit_mod.cross_check_registry(conn, list(rows)))
            if model_id is None and audit_mod.REGISTRY_CHAIN not in chains:
                problems.extend(audit_mod.cross_check_registry(conn, []))
        return audit_mod.AuditReport(chains=counted, entries=total, problems=problems)

    # ------------------------------------------------------------------ counts

    def row_counts(self) -> dict[str, int]:
        """Rows per table; tests use it to prove a refused operation left nothing behind."""
        from modelops.store.tables import metadata

        with db.read_tx(self.engine) as conn:
            return {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in metadata.sorted_tables
            }


_ACTOR_RE = re.compile(r"^[a-z0-9][a-z0-9._:@+-]{0,255}$")
_TEAM_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")


def actor_name(text: str | None) -> str:
    """The one spelling of an actor: trimmed, lowercase, ASCII.

    The self-approval rule compares names, so `ALICE` must be `alice`; ASCII only, so a
    look-alike letter from another script cannot make a second name for the same person.
    """
    name = (text or "").strip().lower()
    if not name:
        raise SpecError("an actor is required: say who is doing this (--actor NAME)")
    if not _ACTOR_RE.match(name):
        raise SpecError(
            f"actor {text!r} is not allowed; allowed: lowercase letters, digits and . _ - : @ +, "
            "starting with a letter or digit, at most 256 characters"
        )
    return name


def team_name(text: str | None) -> str:
    """The one spelling of a team: trimmed and lowercase, as a model's owner_team is."""
    name = (text or "").strip().lower()
    if not name:
        raise SpecError("a team is required: name one (--team TEAM)")
    if not _TEAM_RE.match(name):
        raise SpecError(
            f"team {text!r} is not allowed; allowed: lowercase letters, digits and . _ -, "
            "starting with a letter or digit, at most 128 characters"
        )
    return name


# What a bare rollback picks, newest kind of change first.
_BARE_ROLLBACK_ORDER = (State.CANARY, State.AB_TEST, State.SHADOW, State.PROMOTED)


class _AuditRef(NamedTuple):
    id: int
    version: int | None
    action: str
    actor: str
    ts: str
    payload: dict[str, Any]


def _already(lock_row: Any, done: _AuditRef, rows: list[SliceRow]) -> TransitionResult:
    """The idempotent answer to a rollback that an earlier one already made."""
    prod = next((r.version for r in rows if r.state is State.PROMOTED), None)
    note = f"already rolled back by {done.actor} at {done.ts} (audit entry {done.id})"
    if prod is not None:
        note += f"; to roll back prod version {prod} as well, name it: --version {prod}"
    return TransitionResult(
        model_id=lock_row.model_id,
        version=int(done.version or 0),
        slice=lock_row.slice,
        from_state=State(done.payload.get("from", State.ROLLED_BACK.value)),
        to_state=State.ROLLED_BACK,
        generation=int(lock_row.generation),
        restored_version=done.payload.get("restored"),
        audit_id=done.id,
        changed=False,
        note=note,
    )


@contextlib.contextmanager
def _within(conn: Connection | None, engine: Engine) -> Iterator[Connection]:
    """The caller's write transaction if it has one, else a new one."""
    if conn is not None:
        yield conn
        return
    with db.write_tx(engine) as new:
        yield new


def _verdict(passed: bool, results: dict[str, Any]) -> str:
    text = _j(results)
    return f"{'passed' if passed else 'failed'} {text if len(text) <= 400 else text[:400] + '…'}"


def non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """The first NaN or infinity in a JSON-like value, with its key path (`slo.p99_ms`,
    `gates[1].value`), or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            if found := non_finite(v, f"{path}.{k}" if path else str(k)):
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if found := non_finite(v, f"{path}[{i}]"):
                return found
    elif isinstance(value, numbers.Real) and not math.isfinite(float(value)):
        return path or "value", float(value)
    return None


def _check_finite(results: dict[str, Any]) -> None:
    """NaN and infinities are not measurements; a gate that produced one measured nothing."""
    if found := non_finite(results):
        raise SpecError(
            f"gate results: {found[0]} is {found[1]}, not a finite number; "
            "allowed: finite numbers"
        )


def _key(text: str) -> str:
    return text.strip().lower()


def _unknown_slice(spec: ModelSpec, slice_: str) -> NotFoundError:
    return NotFoundError(
        f"unknown slice {slice_!r} for model {spec.model_id!r}; allowed: {', '.join(spec.slices)}"
    )


def _state(value: State | str) -> State:
    if isinstance(value, State):
        return value
    try:
        return State(str(value).upper())
    except ValueError:
        raise SpecError(
            f"unknown state {value!r}; allowed: {', '.join(s.value for s in State)}"
        ) from None


def _as_ref(value: str | DatasetRef, what: str) -> DatasetRef:
    if isinstance(value, DatasetRef):
        return value
    name, ver = parse_name_version(value, what)
    return DatasetRef(name=name, version=ver)


def _dump(obj: BaseModel | None) -> dict[str, Any] | None:
    return obj.model_dump(mode="json") if obj is not None else None


def _load(cls: type[BaseModel], raw: dict[str, Any] | None) -> Any:
    return cls.model_validate(raw) if raw else None


def _check_dataset_hash(uri: str, content_hash: str | None) -> str | None:
    """For a local file, hash it: a stated hash must match, a missing one is filled in."""
    from modelops.artifacts import sha256_file

    if content_hash is not None:
        content_hash = content_hash.lower()
        if len(content_hash) != 64 or any(c not in "0123456789abcdef" for c in content_hash):
            raise SpecError(f"--hash {content_hash!r} is not a sha256 (64 hex characters)")
    path = (
        Path(uri.removeprefix("file://")) if "://" not in uri or uri.startswith("file://") else None
    )
    if path is not None and path.is_file():
        actual = sha256_file(path)
        if content_hash is not None and actual != content_hash:
            raise IntegrityError(
                f"dataset file {path} has sha256 {actual}, not the stated {content_hash}"
            )
        return actual
    return content_hash
