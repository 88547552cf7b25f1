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

# The evidence types sensors reason about, re-exported so sensors need not import serving.
from serving.predlog import OutcomeStats, WindowStats

__all__ = [
    "ArtifactStoreResource",
    "ControllerResource",
    "FeatureSchemaResource",
    "OutcomeStats",
    "PredictionLogResource",
    "RayServeResource",
    "RegistryResource",
    "TritonResource",
    "VLLMResource",
    "WindowStats",
    "default_resources",
    "modelops_home",
]
