"""Database URLs and engines, shared by the registry and the prediction log.

SQLite is the embedded default; PostgreSQL is chosen by URL. Apart from the transaction
helpers (`db`) and the migration runner (`migrate`), so that the runner can open a database
by URL without the registry's schema module, and neither imports the other.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event

from modelops.errors import SpecError

__all__ = ["default_home", "default_registry_url", "resolve_url", "make_engine"]


def default_home() -> Path:
    return Path(os.environ.get("MODELOPS_HOME", ".modelops")).resolve()


def default_registry_url() -> str:
    return f"sqlite:///{default_home() / 'registry.db'}"


def resolve_url(url: str | None, *, what: str = "registry") -> str:
    """--registry beats MODELOPS_REGISTRY_URL beats the embedded SQLite file.

    `what` names the database in errors: the prediction log shares these URLs, and a user
    must be told which of several URLs was wrong.
    """
    url = url or os.environ.get("MODELOPS_REGISTRY_URL") or default_registry_url()
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    allowed = "allowed: sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    if not (url.startswith("sqlite:///") or url.startswith("postgresql+psycopg://")):
        raise SpecError(f"{what} URL {url!r} is not supported; {allowed}")
    if url.startswith("sqlite:///") and not url.removeprefix("sqlite:///").strip():
        # An empty path is SQLite's private in-memory database: nothing would persist.
        raise SpecError(f"{what} URL {url!r} names no file; {allowed}")
    return url


def make_engine(url: str, *, what: str = "registry") -> Engine:
    url = resolve_url(url, what=what)
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = "a file is in the way" if path.parent.is_file() else exc.strerror or exc
            raise SpecError(
                f"{what} database {path}: cannot create its directory {path.parent} ({reason})"
            ) from None
        # Pooled: closing the last connection to a WAL database checkpoints it, which costs
        # milliseconds per operation if every transaction opens and closes its own.
        engine = create_engine(url, pool_size=5, max_overflow=10, connect_args={"timeout": 60})
        _sqlite_events(engine)
    else:
        # No pre-ping: it is a hidden round trip per checkout on the hot read path; stale
        # connections are recycled instead, and a dropped one is invalidated on its error.
        engine = create_engine(url, pool_size=5, max_overflow=10, pool_recycle=1800)
    _fork_safe(engine)
    return engine


def _fork_safe(engine: Engine) -> None:
    """A forked child must not reuse the parent's pooled connections."""
    ref = weakref.ref(engine)

    def _after_fork() -> None:
        eng = ref()
        if eng is not None:
            eng.dispose(close=False)

    os.register_at_fork(after_in_child=_after_fork)


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("modelops_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
