"""Transactions and the registry schema's revision, on the engines `engines` makes.

Writers take the database's write lock at BEGIN (SQLite) or row locks (PostgreSQL), so every
mutation is serialized where it has to be and readers never wait on WAL. The URL and engine
helpers are re-exported here, where their callers have always found them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine

from modelops.store import migrate
from modelops.store.engines import default_home, default_registry_url, make_engine, resolve_url

__all__ = [
    "HEAD_REVISION",
    "default_home",
    "default_registry_url",
    "resolve_url",
    "make_engine",
    "upgrade",
    "current_revision",
    "ensure_schema",
    "write_tx",
    "read_tx",
]

HEAD_REVISION = "0005_rollback"
_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


@contextlib.contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """One atomic mutation. On SQLite it holds the write lock from the first statement."""
    with engine.connect().execution_options(modelops_write=True) as conn, conn.begin():
        yield conn


@contextlib.contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


def current_revision(engine: Engine) -> str | None:
    return migrate.current_revision(engine)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations: the only way the registry schema is created or changed."""
    migrate.upgrade(engine, script_location=_MIGRATIONS, revision=revision)


def ensure_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    """Check the schema is at head; the embedded default migrates itself on first use."""
    migrate.ensure_schema(
        engine, auto_upgrade=auto_upgrade, script_location=_MIGRATIONS, head=HEAD_REVISION
    )
