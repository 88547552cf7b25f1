"""The prediction log's migration scripts, applied in revision order."""

__all__: list[str] = []
