"""One module per registry schema revision, applied in order by Alembic."""

__all__: list[str] = []
