"""The one migration runner: script location and version table are its parameters.

The registry and the prediction log share it, each with its own scripts and version table,
so two schemas can live in one database without either reading the other's revision.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from modelops.errors import SchemaOutOfDate
from modelops.store import db, migrate

SCRIPTS = db._MIGRATIONS
HEAD = db.HEAD_REVISION


def test_version_table_is_a_parameter(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'one.db'}")
    try:
        with pytest.raises(SchemaOutOfDate) as info:
            migrate.ensure_schema(
                engine,
                auto_upgrade=False,
                script_location=SCRIPTS,
                head=HEAD,
                version_table="other_version",
                what="test database",
                hint="run the test's upgrade",
            )
        assert str(info.value) == (
            f"test database sqlite:///{tmp_path / 'one.db'} is at schema none, code needs "
            f"{HEAD}; run the test's upgrade"
        )
        migrate.ensure_schema(
            engine,
            auto_upgrade=True,
            script_location=SCRIPTS,
            head=HEAD,
            version_table="other_version",
        )
        assert migrate.current_revision(engine, version_table="other_version") == HEAD
        # The default table was never written: the revision lives where it was told to.
        assert migrate.current_revision(engine) is None
        assert "alembic_version" not in inspect(engine).get_table_names()
        # At head, a check neither migrates nor refuses.
        migrate.ensure_schema(
            engine,
            auto_upgrade=False,
            script_location=SCRIPTS,
            head=HEAD,
            version_table="other_version",
        )
    finally:
        engine.dispose()


def test_upgrade_by_url_uses_and_disposes_its_own_engine(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'two.db'}"
    migrate.upgrade(url, script_location=SCRIPTS)
    engine = db.make_engine(url)
    try:
        assert db.current_revision(engine) == HEAD
        db.ensure_schema(engine, auto_upgrade=False)
    finally:
        engine.dispose()


def test_the_registry_wrappers_keep_their_message(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'three.db'}")
    try:
        with pytest.raises(SchemaOutOfDate, match=r"^registry .* run `modelops db upgrade`$"):
            db.ensure_schema(engine, auto_upgrade=False)
    finally:
        engine.dispose()
