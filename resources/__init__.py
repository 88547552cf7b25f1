"""Dagster resources that hand the core and the serving plane to Dagster code.

Every field has a description, secrets arrive through `dg.EnvVar`, and the embedded
defaults (everything under `$MODELOPS_HOME`) need no configuration at all. Clients are built
lazily and cached per process, so defining a resource costs nothing at load time.
"""

from resources.modelops_resources import (
    ArtifactStoreResource,
    ControllerResource,
    FeatureSchemaResource,
    PredictionLogResource,
    RayServeResource,
    RegistryResource,
    TritonResource,
    VLLMResource,
    default_resources,
    modelops_home,
)

__all__ = [
    "ArtifactStoreResource",
    "ControllerResource",
    "FeatureSchemaResource",
    "PredictionLogResource",
    "RayServeResource",
    "RegistryResource",
    "TritonResource",
    "VLLMResource",
    "default_resources",
    "modelops_home",
]
