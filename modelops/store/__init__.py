"""Storage: SQLAlchemy Core tables, engines, roles, and the one migration runner."""

__all__ = ["db", "migrate", "roles", "tables"]
