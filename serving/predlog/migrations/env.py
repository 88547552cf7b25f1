"""Alembic environment. The connection and version table come from the migration runner
(serving.predlog.schema.upgrade), never from an ini file."""

from __future__ import annotations

from alembic import context

from serving.predlog.schema import VERSION_TABLE, metadata


def _ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Autogenerate must not propose dropping the registry's tables in a shared database."""
    return type_ != "table" or name in metadata.tables


connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=context.config.attributes.get("version_table", VERSION_TABLE),
    include_object=_ours,
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
