"""The PostgreSQL role split, against the real server: the registry works as an application
role that owns nothing, and that role cannot switch the audit guards off.

Roles are cluster-wide, so each test creates its own and drops it again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import exc, text
from test_registry_kit import add_people, approve_l3, bootstrap_prod, new_model, version

from modelops.registry import Registry
from modelops.spec import State, Tier
from modelops.store import db
from modelops.store.roles import app_role_sql, grant_app_role

S = State
M = "ranker"


def _admin():  # type: ignore[no-untyped-def]
    import psycopg

    url = os.environ.get("MODELOPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


@pytest.fixture
def app_url(pg_url: str) -> Iterator[str]:
    """`pg_url`'s database, owned by the migrating superuser, and a login role for the app."""
    role = f"modelops_app_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with _admin() as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    owner = db.make_engine(pg_url)
    try:
        grant_app_role(owner, role)
        rest = pg_url.split("://", 1)[1].split("@", 1)[1]
        yield f"postgresql://{role}@{rest}"
    finally:
        with owner.begin() as conn:
            conn.execute(text(f"DROP OWNED BY {role}"))  # its grants, in this database
        owner.dispose()
        with _admin() as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_the_grants_are_the_documented_sql() -> None:
    sql = app_role_sql("modelops_app", "modelops")
    assert sql[:3] == [
        "GRANT CONNECT ON DATABASE modelops TO modelops_app",
        "GRANT USAGE ON SCHEMA public TO modelops_app",
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM modelops_app",
    ]
    assert "GRANT SELECT, INSERT ON public.audit_log TO modelops_app" in sql
    assert "GRANT SELECT, INSERT, UPDATE ON public.audit_heads TO modelops_app" in sql
    assert "GRANT SELECT ON public.alembic_version TO modelops_app" in sql
    assert sql[-1] == "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO modelops_app"
    with pytest.raises(Exception, match="not allowed"):
        app_role_sql("app; DROP TABLE models", "modelops")


def test_the_registry_works_as_the_application_role(app_url: str) -> None:
    with Registry(app_url) as reg:
        with reg.engine.connect() as conn:
            me = conn.execute(text("SELECT current_user")).scalar_one()
            owners = set(
                conn.execute(
                    text("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")
                ).scalars()
            )
            superuser = conn.execute(
                text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            ).scalar_one()
        assert me.startswith("modelops_app_") and me not in owners and not superuser
        add_people(reg)
        new_model(reg, tier=Tier.L3)
        v1 = version(reg).version
        approve_l3(reg, M, v1, S.PROMOTED)
        reg.transition(M, v1, S.PROMOTED, actor="ops", reason="first version")
        new_model(reg, "cheap", tier=Tier.L0)
        bootstrap_prod(reg, "cheap")
        bootstrap_prod(reg, "cheap")
        assert reg.rollback("cheap", actor="oncall").restored_version == 1
        reg.record_alert("cheap", kind="note", detail="as the app role")
        reg.register_dataset("scratch", 1, "s3://x/scratch")
        reg.delete_dataset("scratch", 1, actor="ops")
        assert reg.verify_audit().ok


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("ALTER TABLE audit_log DISABLE TRIGGER ALL", "must be owner"),
        ("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete", "must be owner"),
        ("ALTER TABLE audit_heads DISABLE TRIGGER audit_heads_forward", "must be owner"),
        ("DROP TRIGGER audit_log_no_update_delete ON audit_log", "must be owner"),
        ("DROP TRIGGER audit_heads_forward ON audit_heads", "must be owner"),
        ("DROP FUNCTION modelops_audit_append_only() CASCADE", "must be owner"),
        (
            "CREATE OR REPLACE FUNCTION modelops_audit_heads_forward() RETURNS trigger AS "
            "$$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql",
            "permission denied for schema public",
        ),
        ("SET session_replication_role = replica", "permission denied"),
        ("TRUNCATE audit_log", "permission denied"),
        ("DELETE FROM audit_log", "permission denied"),
        ("UPDATE audit_log SET actor = 'nobody'", "permission denied"),
        ("DELETE FROM audit_heads", "permission denied"),
        ("UPDATE audit_heads SET seq = 1", "audit_heads moves forward only"),
        ("DROP TABLE slice_states CASCADE", "must be owner"),
        ("ALTER TABLE slice_states DISABLE TRIGGER ALL", "must be owner"),
    ],
)
def test_the_application_role_cannot_turn_the_guards_off(
    app_url: str, sql: str, refusal: str
) -> None:
    with Registry(app_url) as reg:
        add_people(reg)
        new_model(reg, tier=Tier.L0)
        bootstrap_prod(reg)
        before = reg.audit_entries(M)
        with pytest.raises(exc.DBAPIError, match=refusal):
            with reg.engine.begin() as conn:
                conn.execute(text(sql))
        assert reg.audit_entries(M) == before
        assert reg.verify_audit().ok


def test_what_the_application_role_may_write_by_hand_verify_names(app_url: str) -> None:
    """It must update slice_states to do its job; a state set by hand is caught by replay."""
    with Registry(app_url) as reg:
        new_model(reg, tier=Tier.L0)
        bootstrap_prod(reg)
        with reg.engine.begin() as conn:
            conn.execute(text("UPDATE slice_states SET state = 'ROLLED_BACK'"))
        report = reg.verify_audit()
        assert [p.kind for p in report.problems] == ["MISMATCH", "MISMATCH"]
        assert "is ROLLED_BACK in slice_states, but its audit chain replays to PROMOTED" in (
            report.problems[0].detail
        )


def test_db_grant_app_prints_and_applies_the_grants(app_url: str, pg_url: str) -> None:
    from test_cli import run

    role = app_url.split("://", 1)[1].split("@", 1)[0]
    database = pg_url.rsplit("/", 1)[1]
    code, out, err = run(f"--registry {pg_url} db grant-app {role}")
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"{st};" for st in app_role_sql(role, database)]


def test_db_grant_app_on_sqlite_is_one_error_line(sqlite_url: str) -> None:
    from test_cli import run

    code, _, err = run(f"--registry {sqlite_url} db grant-app modelops_app")
    assert code == 1
    assert err == "error: the role split is for PostgreSQL; SQLite has no roles\n"

