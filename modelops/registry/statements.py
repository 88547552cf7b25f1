"""Engine, clock, prepared statements and locks, and the one way the registry writes.

Every mutation goes through `RegistryBase._write`: open a write transaction (or join the
caller's), lock what it changes, read the spec, act, and append exactly one audit entry.
A body that ends without its entry and without saying it changed nothing is a bug, and
the transaction rolls back instead of committing an unaudited change.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Literal, Self, TypeVar

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update

from modelops import audit as audit_mod
from modelops.desired import SliceRow
from modelops.errors import NotFoundError, SpecError
from modelops.lifecycle import SINGLETON_STATES
from modelops.spec import ModelSpec, State
from modelops.store import db
from modelops.store.tables import (
    actors,
    datasets,
    dependencies,
    model_slices,
    model_versions,
    models,
    slice_states,
    state_changes,
    teams,
)

from .checks import actor_name, unknown_slice
from .records import Clock, DatasetRecord, utcnow

__all__ = ["RegistryBase", "WriteOp", "Lock"]

T = TypeVar("T")
Lock = Literal["none", "read", "model", "slice", "slices"]

# Hot-path statements, built once: constructing a statement costs more than running it.
_b = bindparam
_LIVE_STATES = [s.value for s in (*SINGLETON_STATES, State.DEPRECATED)]
Q_SPEC = select(models.c.spec_json).where(models.c.model_id == _b("m"))
Q_SPEC_LOCK = Q_SPEC.with_for_update()
Q_SLICE_LOCK = (
    select(model_slices)
    .where(model_slices.c.model_id == _b("m"), model_slices.c.slice == _b("s"))
    .with_for_update()
)
Q_DESIRED = select(model_slices.c.desired_json).where(
    model_slices.c.model_id == _b("m"), model_slices.c.slice == _b("s")
)
Q_STATE_ROW = select(slice_states).where(
    slice_states.c.model_id == _b("m"),
    slice_states.c.version == _b("v"),
    slice_states.c.slice == _b("s"),
)
Q_SLICE_ROWS = select(
    slice_states.c.version, slice_states.c.state, slice_states.c.percent, slice_states.c.params_json
).where(
    slice_states.c.model_id == _b("m"),
    slice_states.c.slice == _b("s"),
    slice_states.c.state.in_(_LIVE_STATES),
)
Q_CONTRACT_REFS = select(model_versions.c.version, model_versions.c.feature_contract_ref).where(
    model_versions.c.model_id == _b("m"), model_versions.c.version.in_(_b("vs", expanding=True))
)
U_STATE = (
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
I_STATE_CHANGE = insert(state_changes)
Q_IDEMPOTENT = select(model_versions.c.version).where(
    model_versions.c.model_id == _b("m"),
    model_versions.c.weights_hash == _b("h"),
    model_versions.c.training_run_id == _b("r"),
)
Q_BY_RUN = (
    select(model_versions.c.version)
    .where(model_versions.c.model_id == _b("m"), model_versions.c.training_run_id == _b("r"))
    .order_by(model_versions.c.version)
    .limit(1)
)
Q_NEXT_VERSION = select(models.c.next_version).where(models.c.model_id == _b("m"))
U_NEXT_VERSION = update(models).where(models.c.model_id == _b("m")).values(next_version=_b("n"))
Q_DATASET = select(datasets).where(datasets.c.name == _b("n"), datasets.c.version == _b("v"))
Q_MODEL_EDGES = select(dependencies.c.downstream_model).where(
    dependencies.c.upstream_model == _b("m"), dependencies.c.upstream_version == 0
)
U_DESIRED = (
    update(model_slices)
    .where(model_slices.c.model_id == _b("m"), model_slices.c.slice == _b("s"))
    .values(generation=_b("generation"), desired_json=_b("desired_json"), updated_at=_b("ts"))
)


class WriteOp:
    """One audited mutation in progress: its connection, its clock reading, its one entry.

    The clock is read once, when the body first asks for `ts`, so a refusal before that
    point reads no time; the actor is checked when first used, as each call always has.
    """

    __slots__ = (
        "conn",
        "spec",
        "lock_row",
        "audit_id",
        "_reg",
        "_actor",
        "_named",
        "_ts",
        "_unchanged",
    )

    def __init__(self, reg: RegistryBase, conn: Connection, actor: str) -> None:
        self.conn = conn
        self.spec: ModelSpec | None = None
        self.lock_row: Any = None
        self.audit_id: int | None = None
        self._reg = reg
        self._actor = actor
        self._named: str | None = None
        self._ts: datetime | None = None
        self._unchanged = False

    @property
    def ts(self) -> datetime:
        if self._ts is None:
            self._ts = self._reg._now()
        return self._ts

    @property
    def actor(self) -> str:
        if self._named is None:
            self._named = actor_name(self._actor)
        return self._named

    @property
    def model(self) -> ModelSpec:
        assert self.spec is not None, "this operation locked no model"
        return self.spec

    def row(self, version: int, slice_: str) -> Any:
        """The version's state row on the slice (its epoch is what approvals bind to)."""
        return self._reg._state_row(self.conn, self.model.model_id, version, slice_)

    def team(self) -> str:
        """The acting actor's registered team; an unregistered actor is refused."""
        return self._reg._actor_team(self.conn, self.actor)

    def audit(
        self,
        action: str,
        payload: dict[str, Any],
        *,
        version: int | None = None,
        model_id: str | None = None,
    ) -> int:
        """Append this operation's entry, on the locked model's chain unless told otherwise."""
        if self.audit_id is not None:
            raise RuntimeError(f"{action}: an operation writes exactly one audit entry")
        if model_id is None and self.spec is not None:
            model_id = self.spec.model_id
        self.audit_id = audit_mod.append(
            self.conn,
            model_id=model_id,
            version=version,
            action=action,
            ts=self.ts,
            actor=self.actor,
            payload=payload,
        )
        return self.audit_id

    def unchanged(self, value: T) -> T:
        """Finish without an entry: the operation found its work already done."""
        self._unchanged = True
        return value


class RegistryBase:
    """State shared by every part of the registry: the engine, the clock, the spec cache."""

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
        self.clock: Clock = clock or utcnow
        if auto_upgrade is None:
            auto_upgrade = self.engine.dialect.name == "sqlite"
        db.ensure_schema(self.engine, auto_upgrade=auto_upgrade)
        self._pg = self.engine.dialect.name == "postgresql"
        self._spec_cache: dict[str, ModelSpec] = {}
        self._spec_raw: dict[str, str] = {}  # what each cached spec was parsed from

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the write helper

    @contextlib.contextmanager
    def _write(
        self,
        actor: str,
        *,
        model_id: str | None = None,
        lock: Lock = "none",
        slice_: str | None = None,
        within: Connection | None = None,
    ) -> Iterator[WriteOp]:
        """Open (or join) a write transaction, lock, read the spec, and hold the body to one
        audit entry.

        `within` joins a transaction the caller already holds, so several operations (each
        with its own entry) commit or roll back together. `lock`: "model" locks the spec
        row (version numbering, pins, edges); "slice" the (model, slice) row that
        serializes its transitions; "slices" every slice of the model in a fixed order;
        "read" reads the spec without a lock.
        """
        ctx = contextlib.nullcontext(within) if within is not None else db.write_tx(self.engine)
        with ctx as conn:
            op = WriteOp(self, conn, actor)
            if model_id is not None:
                if lock == "slice":
                    assert slice_ is not None
                    op.lock_row = self._lock_slice(conn, model_id, slice_)
                    op.spec = self._spec(conn, model_id)
                elif lock == "slices":
                    op.spec = self._spec(conn, model_id)
                    for s in sorted(op.spec.slices):
                        self._lock_slice(conn, model_id, s)
                else:
                    op.spec = self._spec(conn, model_id, lock=lock == "model")
            yield op
            if op.audit_id is None and not op._unchanged:
                raise RuntimeError("a registry mutation ended without its audit entry")

    # ------------------------------------------------------------------ reads under a tx

    def _now(self) -> datetime:
        ts = self.clock()
        return ts if ts.tzinfo else ts.replace(tzinfo=UTC)

    def _spec(self, conn: Connection, model_id: str, *, lock: bool = False) -> ModelSpec:
        raw = conn.execute(Q_SPEC_LOCK if lock else Q_SPEC, {"m": model_id}).scalar()
        if raw is None:
            raise NotFoundError(
                f"unknown model {model_id!r}; "
                "create it first with `modelops model create SPEC.yaml`"
            )
        cached = self._spec_cache.get(model_id)
        # A spec changes only by a gated amendment, possibly in another process: the row
        # read under this transaction is the truth, the cache only saves parsing it.
        if cached is None or self._spec_raw.get(model_id) != raw:
            cached = ModelSpec.model_validate_json(raw)
            self._spec_cache[model_id] = cached
            self._spec_raw[model_id] = raw
        return cached

    @staticmethod
    def _require_actor(actor: str) -> str:
        return actor_name(actor)

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

    def _actor_team(self, conn: Connection, name: str) -> str:
        team = conn.execute(select(actors.c.team).where(actors.c.name == name)).scalar()
        if team is None:
            raise NotFoundError(
                f"unknown actor {name!r}; register it with `modelops actor add {name} --team TEAM`"
            )
        return str(team)

    def _dataset(self, conn: Connection, name: str, version: int) -> DatasetRecord:
        row = conn.execute(Q_DATASET, {"n": name, "v": version}).first()
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

    def _lock_slice(self, conn: Connection, model_id: str, slice_: str) -> Any:
        spec = self._spec(conn, model_id)
        row = conn.execute(Q_SLICE_LOCK, {"m": model_id, "s": slice_}).first()
        if row is None:
            raise unknown_slice(spec, slice_)
        return row

    def _state_row(self, conn: Connection, model_id: str, version: int, slice_: str) -> Any:
        row = conn.execute(Q_STATE_ROW, {"m": model_id, "v": version, "s": slice_}).first()
        if row is None:
            self._version_row(conn, model_id, version)
            raise unknown_slice(self._spec(conn, model_id), slice_)
        return row

    def _slice_rows(self, conn: Connection, model_id: str, slice_: str) -> list[SliceRow]:
        rows = conn.execute(Q_SLICE_ROWS, {"m": model_id, "s": slice_}).all()
        return [
            SliceRow(r.version, State(r.state), r.percent, json.loads(r.params_json)) for r in rows
        ]

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
