"""modelops: a model registry and deployment control plane.

The core names its public parts by module (`modelops.registry`, `modelops.spec`,
`modelops.actions`, `modelops.evaluation`, ...); importing the package itself loads nothing,
so a sensor tick or a CLI call pays only for what it uses.
"""

__all__: list[str] = []
