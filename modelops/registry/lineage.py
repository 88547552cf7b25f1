"""Lineage: dependents, their closure, and the dataset pins that keep it unbroken.

Invariant 2 lives here and in archiving: a dataset pinned by a non-archived version cannot
be deleted, so every version can always name what it was trained and evaluated on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, insert, select, text

from modelops.errors import IllegalTransition, NotFoundError
from modelops.store import db
from modelops.store.tables import (
    contract_features,
    dataset_pins,
    dependencies,
    model_versions,
)

from .checks import as_ref
from .records import ModelDependents, VersionKey, dump
from .versions import VersionOps

__all__ = ["LineageOps"]


class LineageOps(VersionOps):
    def add_dependent(
        self, upstream: str, downstream: str, *, upstream_version: int | None = None, actor: str
    ) -> bool:
        """Declare that `downstream` consumes `upstream` (any version, or one version)."""
        actor = self._require_actor(actor)
        with self._write(actor, model_id=upstream, lock="model") as op:
            if upstream_version is not None:
                self._version_row(op.conn, upstream, upstream_version)
            added = self._add_edges(op.conn, upstream, upstream_version or 0, [downstream], op.ts)
            if not added:
                return op.unchanged(False)
            op.audit("add_dependent", {"downstream": downstream}, version=upstream_version)
            return True

    # ------------------------------------------------------------------ pins

    def pin(self, model_id: str, version: int, dataset: str, *, role: str, actor: str) -> bool:
        """Pin another dataset version to a model version (e.g. an extra eval set)."""
        actor = self._require_actor(actor)
        ref = as_ref(dataset, "dataset")
        with self._write(actor, model_id=model_id, lock="model") as op:
            vrow = self._version_row(op.conn, model_id, version)
            if vrow.archived:
                raise IllegalTransition(f"{model_id}@{version} is archived; it pins nothing")
            self._dataset(op.conn, ref.name, ref.version)
            key = and_(
                dataset_pins.c.dataset_name == ref.name,
                dataset_pins.c.dataset_version == ref.version,
                dataset_pins.c.model_id == model_id,
                dataset_pins.c.version == version,
                dataset_pins.c.role == role,
            )
            if op.conn.execute(select(func.count()).select_from(dataset_pins).where(key)).scalar():
                return op.unchanged(False)
            op.conn.execute(
                insert(dataset_pins).values(
                    dataset_name=ref.name,
                    dataset_version=ref.version,
                    model_id=model_id,
                    version=version,
                    role=role,
                )
            )
            op.audit("pin", {"dataset": str(ref), "role": role}, version=version)
            return True

    def unpin(self, model_id: str, version: int, dataset: str, *, role: str, actor: str) -> None:
        actor = self._require_actor(actor)
        ref = as_ref(dataset, "dataset")
        if role in ("training_data", "eval_set"):
            raise IllegalTransition(
                f"the {role} pin of {model_id}@{version} is part of its lineage; it is released "
                "only by archiving the version"
            )
        with self._write(actor, model_id=model_id, lock="model") as op:
            res = op.conn.execute(
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
            op.audit("unpin", {"dataset": str(ref), "role": role}, version=version)

    # ------------------------------------------------------------------ dependents

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
                        k: dump(getattr(v, k))
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
