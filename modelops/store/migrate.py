"""The one Alembic migration runner, for every database the project keeps.

The registry and the prediction log each own a script location and a version table; the
runner knows neither, so both apply their migrations, and refuse a stale schema, the same
way. Migrations stay the only way a schema is created or changed.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, inspect, text

from modelops.errors import SchemaOutOfDate
from modelops.store.engines import make_engine

__all__ = ["DEFAULT_VERSION_TABLE", "current_revision", "upgrade", "ensure_schema", "upgrade_lock"]

DEFAULT_VERSION_TABLE = "alembic_version"


def current_revision(engine: Engine, *, version_table: str = DEFAULT_VERSION_TABLE) -> str | None:
    """The revision the database is at, or None before its first migration."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(version_table):
            return None
        return conn.execute(text(f"SELECT version_num FROM {version_table}")).scalar()


def upgrade(
    engine_or_url: Engine | str,
    *,
    script_location: Path,
    version_table: str = DEFAULT_VERSION_TABLE,
    revision: str = "head",
) -> None:
    """Apply the migrations under `script_location` up to `revision`.

    The connection and version table reach the environment script through
    `config.attributes`, never through an ini file. A URL gets an engine of its own, which
    is disposed afterwards.
    """
    from alembic import command
    from alembic.config import Config

    owned = isinstance(engine_or_url, str)
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["version_table"] = version_table
    try:
        with upgrade_lock(engine), engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        if owned:
            engine.dispose()


@contextlib.contextmanager
def upgrade_lock(engine: Engine) -> Iterator[None]:
    """Several processes may open a fresh embedded database at once; one migrates, the
    others then find it at head. PostgreSQL serializes the DDL itself."""
    if engine.dialect.name != "sqlite" or engine.url.database is None:
        yield
        return
    lock_path = Path(engine.url.database).with_suffix(".migrate.lock")
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_schema(
    engine: Engine,
    *,
    auto_upgrade: bool,
    script_location: Path,
    head: str,
    version_table: str = DEFAULT_VERSION_TABLE,
    what: str = "registry",
    hint: str = "run `modelops db upgrade`",
) -> None:
    """Check the schema is at `head`; with `auto_upgrade` (the embedded default) migrate it,
    else refuse with one line naming the database (`what`), both revisions and `hint`."""
    rev = current_revision(engine, version_table=version_table)
    if rev == head:
        return
    if auto_upgrade:
        upgrade(engine, script_location=script_location, version_table=version_table)
        return
    where = engine.url.render_as_string(hide_password=True)
    raise SchemaOutOfDate(f"{what} {where} is at schema {rev or 'none'}, code needs {head}; {hint}")
