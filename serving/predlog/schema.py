"""The prediction log's tables, database URLs and migrations (its own Alembic history and
version table, so it can share a PostgreSQL database with the registry)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import OperationalError

from modelops.errors import BackendUnavailable
from modelops.store import db, migrate

__all__ = [
    "HEAD_REVISION",
    "VERSION_TABLE",
    "metadata",
    "predictions",
    "outcomes",
    "events",
    "default_predlog_url",
    "resolve_predlog_url",
    "upgrade",
    "current_revision",
    "ensure_schema",
    "open_engine",
]

HEAD_REVISION = "predlog_0003"
VERSION_TABLE = "predlog_alembic_version"
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


# ----------------------------------------------------------------------------- schema


class _Json(sa.types.TypeDecorator[Any]):
    """JSONB on PostgreSQL (queryable), JSON text on SQLite; None is SQL NULL, not 'null'."""

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(sa.JSON(none_as_null=True))


_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The query-side mirror of the migrations; they, not this, create the tables.
metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(), nullable=False),
    sa.Column("ts", sa.Double(), nullable=False),
    sa.Column("model_id", sa.String(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("arm", sa.String(), nullable=False),
    sa.Column("slice", sa.String(), nullable=False),
    sa.Column("user_bucket", sa.Integer(), nullable=True),
    sa.Column("latency_ms", sa.Double(), nullable=False),
    sa.Column("error", sa.String(), nullable=True),
    sa.Column("outputs", _Json(), nullable=True),
    sa.Column("inputs", _Json(), nullable=True),
    sa.Column("features", _Json(), nullable=True),
    sa.Column("prompt_tokens", sa.Integer(), nullable=True),
    # predlog_0003: keyed hash of the user key (never the raw id) and the data slice.
    sa.Column("user_hash", sa.String(32), nullable=True),
    sa.Column("segment", sa.String(), nullable=True),
    sa.Index(
        "ix_predictions_window",
        *("model_id", "ts", "version", "arm", "slice", "latency_ms", "error", "prompt_tokens"),
        *("user_hash", "segment"),
    ),
)
outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(), nullable=False),
    sa.Column("ts", sa.Double(), nullable=False),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("value", sa.Double(), nullable=False),
    # One outcome per (request, name): a replayed post cannot count twice (predlog_0002).
    sa.Index("uq_outcomes_request_name", "request_id", "name", unique=True),
)
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Double(), nullable=False),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("model_id", sa.String(), nullable=False),
    sa.Column("slice", sa.String(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=True),
    sa.Column("detail", _Json(), nullable=True),
    sa.Index("ix_events_model_ts", "model_id", "ts"),
)


# ------------------------------------------------------------------- engines, migrations


def default_predlog_url() -> str:
    return f"sqlite:///{db.default_home() / 'predictions.db'}"


def resolve_predlog_url(url: str | None) -> str:
    """An explicit URL beats MODELOPS_PREDLOG_URL beats $MODELOPS_HOME/predictions.db."""
    return db.resolve_url(
        url or os.environ.get("MODELOPS_PREDLOG_URL") or default_predlog_url(),
        what="prediction log",
    )


def current_revision(engine: Engine) -> str | None:
    return migrate.current_revision(engine, version_table=VERSION_TABLE)


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Apply the log's migrations: the only way its schema is created or changed."""
    migrate.upgrade(
        engine_or_url, script_location=_MIGRATIONS, version_table=VERSION_TABLE, revision=revision
    )


def ensure_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    """Embedded SQLite migrates itself on first use; PostgreSQL must be upgraded explicitly."""
    migrate.ensure_schema(
        engine,
        auto_upgrade=auto_upgrade,
        script_location=_MIGRATIONS,
        head=HEAD_REVISION,
        version_table=VERSION_TABLE,
        what="prediction log",
        hint="run serving.predlog.upgrade(URL) against it",
    )


def open_engine(url: str | None, auto_upgrade: bool | None) -> Engine:
    engine = db.make_engine(resolve_predlog_url(url), what="prediction log")
    if auto_upgrade is None:
        auto_upgrade = engine.dialect.name == "sqlite"
    try:
        ensure_schema(engine, auto_upgrade=auto_upgrade)
    except OperationalError as exc:
        engine.dispose()
        # Named here: a caller that also holds a registry must not blame the registry.
        where = engine.url.render_as_string(hide_password=True)
        raise BackendUnavailable(
            f"cannot use the prediction log database {where}: {exc.orig}"
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return engine
