"""The registry's catalog: teams, actors, datasets, feature contracts and models.

Each entry is immutable once written, so registering it again with the same content is a
no-op and with other content a conflict. Every write is a `_write` operation, and its
`_<verb>` body takes that operation so `register_candidate` can run several in one
transaction.
"""

from __future__ import annotations

import json

from sqlalchemy import delete, insert, select

from modelops.contracts import FeatureContract, parse_contract_ref
from modelops.desired import DesiredState
from modelops.errors import ConflictError, NotFoundError, PinnedError
from modelops.spec import ModelSpec
from modelops.store import db
from modelops.store.tables import (
    actors,
    contract_features,
    dataset_pins,
    datasets,
    feature_contracts,
    model_slices,
    models,
    teams,
)

from .checks import check_dataset_args, check_dataset_hash, team_name
from .records import DatasetRecord, canonical
from .statements import RegistryBase, WriteOp

__all__ = ["CatalogOps"]


class CatalogOps(RegistryBase):
    # ------------------------------------------------------------------ teams and actors

    def add_team(self, name: str, *, actor: str = "admin") -> str:
        """Teams are a known set, so a misspelt team cannot pass for another team."""
        team = team_name(name)
        actor = self._require_actor(actor)
        with self._write(actor) as op:
            return self._add_team(op, team)

    def _add_team(self, op: WriteOp, team: str) -> str:
        if op.conn.execute(select(teams.c.name).where(teams.c.name == team)).first():
            return op.unchanged(team)
        op.conn.execute(insert(teams).values(name=team, created_at=op.ts.isoformat()))
        op.audit("add_team", {"name": team})
        return team

    def list_teams(self) -> list[str]:
        with db.read_tx(self.engine) as conn:
            return sorted(self._known_teams(conn))

    def add_actor(self, name: str, team: str, *, actor: str = "admin") -> None:
        """Actors and their teams are registered so approvals can prove team membership."""
        name = self._require_actor(name)
        team = team_name(team)
        with self._write(actor) as op:
            self._require_team(op.conn, team)
            row = op.conn.execute(select(actors).where(actors.c.name == name)).first()
            if row is not None:
                if row.team != team:
                    raise ConflictError(
                        f"actor {name!r} already exists in team {row.team!r}, not {team!r}"
                    )
                return op.unchanged(None)
            op.conn.execute(
                insert(actors).values(name=name, team=team, created_at=op.ts.isoformat())
            )
            op.audit("add_actor", {"name": name, "team": team})

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
        check_dataset_args(kind, version)
        content_hash = check_dataset_hash(uri, content_hash)
        with self._write(actor) as op:
            return self._register_dataset(op, name, version, uri, content_hash, kind)

    def _register_dataset(
        self, op: WriteOp, name: str, version: int, uri: str, content_hash: str | None, kind: str
    ) -> DatasetRecord:
        row = op.conn.execute(
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
            return op.unchanged(DatasetRecord(**row._mapping))
        rec = DatasetRecord(
            name=name,
            version=version,
            kind=kind,
            uri=uri,
            content_hash=content_hash,
            created_at=op.ts.isoformat(),
        )
        op.conn.execute(insert(datasets).values(**rec.model_dump()))
        op.audit("register_dataset", rec.model_dump())
        return rec

    def get_dataset(self, name: str, version: int) -> DatasetRecord:
        with db.read_tx(self.engine) as conn:
            return self._dataset(conn, name, version)

    def delete_dataset(self, name: str, version: int, *, actor: str) -> None:
        """Invariant 2: refused while any non-archived version references it."""
        actor = self._require_actor(actor)
        with self._write(actor) as op:
            rec = self._dataset(op.conn, name, version)
            holders = op.conn.execute(
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
            op.conn.execute(
                delete(datasets).where(datasets.c.name == name, datasets.c.version == version)
            )
            op.audit("delete_dataset", rec.model_dump())

    # ------------------------------------------------------------------ contracts

    def register_contract(self, contract: FeatureContract, *, actor: str = "system") -> str:
        """Contracts are immutable once registered: a change is a new version."""
        with self._write(actor) as op:
            return self._register_contract(op, contract)

    def _register_contract(self, op: WriteOp, contract: FeatureContract) -> str:
        ref = contract.ref
        features = [f.model_dump(mode="json") for f in contract.features]
        row = op.conn.execute(
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
            return op.unchanged(ref)
        op.conn.execute(
            insert(feature_contracts).values(
                name=contract.name,
                version=contract.version,
                features_json=canonical(features),
                created_at=op.ts.isoformat(),
            )
        )
        op.conn.execute(
            insert(contract_features),
            [{"contract_ref": ref, "feature_name": f.name} for f in contract.features],
        )
        op.audit("register_contract", {"ref": ref, "features": features})
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
        with self._write(actor) as op:
            return self._create_model(op, spec)

    def _create_model(self, op: WriteOp, spec: ModelSpec) -> ModelSpec:
        raw = spec.model_dump_json()
        conn = op.conn
        self._require_team(
            conn, spec.owner_team, what="owner_team", where=f"model {spec.model_id!r}: "
        )
        existing = conn.execute(
            select(models.c.spec_json).where(models.c.model_id == spec.model_id)
        ).scalar()
        if existing is not None:
            old = ModelSpec.model_validate_json(existing)
            if old == spec:
                return op.unchanged(old)
            diff = sorted(k for k in ModelSpec.model_fields if getattr(old, k) != getattr(spec, k))
            raise ConflictError(
                f"model {spec.model_id!r} already exists with a different spec "
                f"(fields differ: {', '.join(diff)}); specs are changed by a migration "
                "of the model, not by re-creating it"
            )
        ts = op.ts
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
        op.audit("register_model", json.loads(raw), model_id=spec.model_id)
        return spec

    def get_model(self, model_id: str) -> ModelSpec:
        with db.read_tx(self.engine) as conn:
            return self._spec(conn, model_id)

    def list_models(self) -> list[str]:
        with db.read_tx(self.engine) as conn:
            return list(
                conn.execute(select(models.c.model_id).order_by(models.c.model_id)).scalars()
            )
