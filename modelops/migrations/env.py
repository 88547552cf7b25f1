"""Alembic environment. The connection is handed in by modelops.store.db, never by an ini file."""

from __future__ import annotations

from alembic import context

from modelops.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
