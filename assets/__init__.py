"""Asset factories for a fleet declared in YAML: datasets, eval sets, features, models (with
their offline gates as blocking checks) and eval reports.

`ModelopsFleetTranslator` (`assets.translator`) decides keys, descriptions, tags, metadata and
checks through small overridable methods; the factories (`assets.fleet_defs`) wire those specs
to asset bodies; `assets.component.ModelopsFleetComponent` puts them behind a Dagster
Component for YAML users. None does I/O at load time.
"""

from assets.eval_report import materialize_eval_report, render_eval_report, report_path
from assets.fleet_defs import (
    build_dataset_asset,
    build_eval_report_asset,
    build_feature_specs,
    build_fleet_assets,
    build_fleet_defs,
    build_model_asset,
)
from assets.gates import GATE_NAMES, GateResult
from assets.model_assets import materialize_model, observe_dataset
from assets.online_reports import build_online_report_defs
from assets.translator import (
    IRREVERSIBLE_WARNING,
    FeatureUse,
    ModelopsFleetTranslator,
    feature_uses,
)

__all__ = [
    "GATE_NAMES",
    "IRREVERSIBLE_WARNING",
    "FeatureUse",
    "GateResult",
    "ModelopsFleetTranslator",
    "build_dataset_asset",
    "build_eval_report_asset",
    "build_feature_specs",
    "build_fleet_assets",
    "build_fleet_defs",
    "build_model_asset",
    "build_online_report_defs",
    "feature_uses",
    "materialize_eval_report",
    "materialize_model",
    "observe_dataset",
    "render_eval_report",
    "report_path",
]
