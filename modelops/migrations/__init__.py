"""The registry schema's Alembic environment; migrations are the only way the schema changes."""

__all__: list[str] = []
