"""Storage: SQLAlchemy Core tables, engines, roles, and the one migration runner.

Its modules are named where they are used (`store.db`, `store.engines`, `store.migrate`,
`store.roles`, `store.tables`); the package re-exports none, so importing one loads no other.
"""

__all__: list[str] = []
