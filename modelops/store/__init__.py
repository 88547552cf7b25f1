"""Storage: SQLAlchemy Core tables, engines, and the migration runner."""
