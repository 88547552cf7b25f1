"""Alembic environment. The connection is handed in by modelops.store.db, never by an ini file."""

from __future__ import annotations

from alembic import context

from modelops.store.tables import metadata

connection = context.config.attributes["connection"]


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """Tables another plane keeps in the same database are not ours to drop."""
    return not (type_ == "table" and reflected and compare_to is None)


context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=context.config.attributes.get("version_table", "alembic_version"),
    render_as_batch=True,
    include_object=include_object,
)
with context.begin_transaction():
    context.run_migrations()
