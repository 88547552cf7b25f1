"""Asset factories for a fleet declared in YAML: datasets, eval sets, features, models (with
their offline gates as blocking checks) and eval reports.

`build_fleet_defs(fleet)` is the plain factory; `assets.component.ModelopsFleetComponent` puts
it behind a Dagster Component for YAML users. Neither does I/O at load time: data, registry
and Triton are touched only when an asset runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from assets.eval_report import build_eval_report_asset, render_eval_report, report_key
from assets.gates import GATE_NAMES, GateResult
from assets.model_assets import (
    IRREVERSIBLE_WARNING,
    build_dataset_asset,
    build_feature_specs,
    build_model_asset,
    dataset_key,
    feature_key,
    model_key,
)
from modelops.fleet import Fleet

__all__ = [
    "GATE_NAMES",
    "IRREVERSIBLE_WARNING",
    "GateResult",
    "build_dataset_asset",
    "build_eval_report_asset",
    "build_feature_specs",
    "build_fleet_assets",
    "build_fleet_defs",
    "build_model_asset",
    "dataset_key",
    "feature_key",
    "model_key",
    "render_eval_report",
    "report_key",
]


def build_fleet_assets(fleet: Fleet) -> list[dg.AssetsDefinition | dg.AssetSpec | object]:
    """Every asset of the fleet, in graph order: data, features, models, reports."""
    out: list[dg.AssetsDefinition | dg.AssetSpec | object] = [
        build_dataset_asset(d) for d in fleet.datasets
    ]
    out.extend(build_feature_specs(fleet))
    out.extend(build_model_asset(fleet, m) for m in fleet.models)
    out.extend(build_eval_report_asset(fleet, m) for m in fleet.models)
    return out


def build_fleet_defs(fleet: Fleet, *, resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """The fleet's assets and checks.

    Resources (keys registry, artifacts, triton) are left to the caller by default, so
    `definitions.py` can merge these with jobs and sensors that share one set; pass
    `resources=resources.default_resources()` for a standalone, loadable Definitions.
    """
    return dg.Definitions(assets=build_fleet_assets(fleet), resources=resources)
