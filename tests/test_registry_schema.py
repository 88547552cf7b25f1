"""The migrated schema is the schema the code declares, and out-of-date databases say so."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from modelops.errors import SchemaOutOfDate
from modelops.registry import Registry
from modelops.store import db
from modelops.store.tables import metadata


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(db._MIGRATIONS))
    return cfg


def schema_diff(reg: Registry) -> list[object]:
    with reg.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(ctx, metadata))


def test_migrated_schema_matches_the_tables_module(registry: Registry) -> None:
    assert schema_diff(registry) == []
    tables = set(inspect(registry.engine).get_table_names())
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_head_revision_is_the_migration_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [db.HEAD_REVISION]


def test_a_fresh_sqlite_file_upgrades_itself_on_first_open(tmp_path: Path) -> None:
    path = tmp_path / "home" / "registry.db"
    assert not path.exists()
    with Registry(f"sqlite:///{path}") as reg:
        assert db.current_revision(reg.engine) == db.HEAD_REVISION
        assert set(reg.row_counts()) == set(metadata.tables)
        assert set(reg.row_counts().values()) == {0}
        assert schema_diff(reg) == []
    # And the second open finds it at head.
    with Registry(f"sqlite:///{path}") as reg:
        assert reg.list_models() == []


def test_sqlite_without_auto_upgrade_says_how_to_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with pytest.raises(
        SchemaOutOfDate,
        match=r"at schema none, code needs 0005_rollback; run `modelops db upgrade`",
    ):
        Registry(url, auto_upgrade=False)


def test_an_unmigrated_postgres_database_is_refused(empty_pg_url: str) -> None:
    engine = db.make_engine(empty_pg_url)
    try:
        with pytest.raises(SchemaOutOfDate) as info:
            Registry(empty_pg_url, engine=engine)
        msg = str(info.value)
        assert "is at schema none, code needs 0005_rollback" in msg
        assert msg.endswith("run `modelops db upgrade`")
        # PostgreSQL never migrates itself: nothing was created.
        assert inspect(engine).get_table_names() == []
        db.upgrade(engine)
        with Registry(empty_pg_url, engine=engine) as reg:
            assert db.current_revision(reg.engine) == db.HEAD_REVISION
            assert schema_diff(reg) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_downgrade_to_base_and_upgrade_again(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "empty_pg_url")
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        with Registry(url, engine=engine) as reg:
            assert schema_diff(reg) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upgrading_a_0001_registry_makes_its_valid_teams_known(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """Teams its actors and models already name become known, each with an audit entry, so
    the upgraded registry still verifies; a blank or malformed team is not made known."""
    from datetime import UTC, datetime

    from modelops import audit

    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "empty_pg_url")
    engine = db.make_engine(url)
    try:
        cfg = alembic_config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001_initial")
            ts = datetime(2025, 1, 1, tzinfo=UTC)
            for name, team in (("ann", "ads"), ("bob", " Risk "), ("cy", ""), ("di", "a b")):
                conn.execute(
                    text("INSERT INTO actors (name, team, created_at) VALUES (:n, :t, 'x')"),
                    {"n": name, "t": team},
                )
                audit.append(conn, model_id=None, version=None, action="add_actor", ts=ts,
                             actor="admin", payload={"name": name, "team": team})  # fmt: skip
        db.upgrade(engine)
        with Registry(url, engine=engine) as reg:
            assert reg.list_teams() == ["ads", "risk"]
            added = [e for e in reg.audit_entries(None) if e.action == "add_team"]
            assert [(e.payload, e.actor) for e in added] == [
                ({"name": "ads"}, "migration:0002"),
                ({"name": "risk"}, "migration:0002"),
            ]
            assert reg.verify_audit().ok
    finally:
        engine.dispose()

