"""Alembic scripts for the prediction log: its own history and its own version table, so it
can share a PostgreSQL database with the registry without either migration seeing the other."""

__all__: list[str] = []
