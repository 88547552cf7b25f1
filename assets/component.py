"""The fleet as a Dagster Component: `type: assets.component.ModelopsFleetComponent` in a
defs.yaml with `attributes: {fleet_file: fleet.yaml}` turns the declaration into definitions.

Registered through the `dagster_dg_cli.registry_modules` entry point, so `dg list components`
finds it. It is a thin shell over `assets.fleet_defs.build_fleet_defs`, which tests call directly.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from assets.fleet_defs import build_fleet_defs
from assets.translator import ModelopsFleetTranslator
from modelops.fleet import load_fleet
from resources import default_resources

__all__ = ["ModelopsFleetComponent"]


class ModelopsFleetComponent(dg.Component, dg.Resolvable, dg.Model):
    """Models, datasets, eval sets, features, gates and eval reports of one fleet YAML."""

    fleet_file: str = Field(
        description="the fleet YAML; relative paths are from the component's own folder"
    )

    def fleet_path(self, base: Path) -> Path:
        path = Path(self.fleet_file).expanduser()
        return path if path.is_absolute() else base / path

    def get_translator(self) -> ModelopsFleetTranslator:
        """Override in a subclass to change keys, descriptions, tags or metadata."""
        return ModelopsFleetTranslator()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        base = context.path if context.path.is_dir() else context.path.parent
        fleet = load_fleet(self.fleet_path(base))
        return build_fleet_defs(
            fleet, resources=default_resources(), translator=self.get_translator()
        )
