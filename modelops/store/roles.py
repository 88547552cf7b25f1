"""The PostgreSQL role split: an owner that migrates, and an application role that cannot
turn the audit log's guards off.

Only a table's owner (or a superuser) may disable, drop or replace a trigger or its function,
and only a superuser may set `session_replication_role`, which skips triggers. So the
registry runs as a role that owns nothing and holds only the rows privileges it needs:
never DELETE, UPDATE or TRUNCATE on `audit_log`, never DELETE on `audit_heads` (whose
UPDATEs the triggers hold to forward moves), DELETE only where the registry deletes rows
(a dataset, a dataset pin). Migrations run as the owner; after each `modelops db upgrade`,
`modelops db grant-app ROLE` grants the same on any new table.
"""

from __future__ import annotations

import re

from sqlalchemy import Engine, text

from modelops.errors import SpecError
from modelops.store.tables import metadata

__all__ = ["APP_PRIVILEGES", "app_role_sql", "grant_app_role"]

# Table -> what the application role may do to its rows; every other table gets the default.
DEFAULT_PRIVILEGES = "SELECT, INSERT, UPDATE"
APP_PRIVILEGES: dict[str, str] = {
    "audit_log": "SELECT, INSERT",
    "audit_heads": "SELECT, INSERT, UPDATE",
    "datasets": "SELECT, INSERT, UPDATE, DELETE",
    "dataset_pins": "SELECT, INSERT, UPDATE, DELETE",
    # A consumed nonce, an amendment and a key's registration are never rewritten (a key's
    # revocation is its one UPDATE, hence the default for actor_keys).
    "signed_nonces": "SELECT, INSERT",
    "spec_amendments": "SELECT, INSERT",
    "break_glass": "SELECT, INSERT",
    "team_unlocks": "SELECT, INSERT",
    "alembic_version": "SELECT",
}
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def app_role_sql(role: str, database: str, schema: str = "public") -> list[str]:
    """The statements, run by the owner, that give `role` exactly the application's rights."""
    for what, name in (("role", role), ("database", database), ("schema", schema)):
        if not _ROLE.match(name):
            raise SpecError(
                f"{what} {name!r} is not allowed here; allowed: lowercase letters, digits and _"
            )
    tables = sorted({*metadata.tables, "alembic_version"})
    out = [
        f"GRANT CONNECT ON DATABASE {database} TO {role}",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}",
    ]
    out += [
        f"GRANT {APP_PRIVILEGES.get(t, DEFAULT_PRIVILEGES)} ON {schema}.{t} TO {role}"
        for t in tables
    ]
    out.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}")
    return out


def grant_app_role(engine: Engine, role: str, schema: str = "public") -> list[str]:
    """Apply `app_role_sql` as the connected (owning) role; returns what it ran."""
    if engine.dialect.name != "postgresql":
        raise SpecError("the role split is for PostgreSQL; SQLite has no roles")
    database = str(engine.url.database)
    statements = app_role_sql(role, database, schema)
    with engine.begin() as conn:
        for st in statements:
            conn.execute(text(st))
    return statements
