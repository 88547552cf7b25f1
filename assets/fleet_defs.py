"""The factories: each turns a translator's spec into an asset whose body is one call.

`build_fleet_defs(fleet)` is the plain entry point; `assets.component.ModelopsFleetComponent`
puts it behind a Dagster Component for YAML users. Nothing here does I/O at load time: data,
registry and Triton are touched only when an asset runs. What an asset is called, described
and tagged is the translator's (`assets.translator`); what it does when it runs is
`assets.model_assets`, `assets.eval_report` and `assets.snapshots`.

(No `from __future__ import annotations` here: Dagster reads the asset bodies' `context`
annotation at definition time.)
"""

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from assets.eval_report import materialize_eval_report
from assets.model_assets import materialize_model, observe_dataset
from assets.translator import ModelopsFleetTranslator, feature_uses
from modelops.fleet import DatasetDecl, Fleet, ModelDecl
from resources import ArtifactStoreResource, RegistryResource, TritonResource

__all__ = [
    "build_dataset_asset",
    "build_eval_report_asset",
    "build_feature_specs",
    "build_fleet_assets",
    "build_fleet_defs",
    "build_model_asset",
]


def _translator(translator: ModelopsFleetTranslator | None) -> ModelopsFleetTranslator:
    return translator if translator is not None else ModelopsFleetTranslator()


def build_dataset_asset(
    decl: DatasetDecl, translator: ModelopsFleetTranslator | None = None
) -> Any:
    """An observable source asset: the data is written outside Dagster, so Dagster observes
    it, and its data version is the sha256 of the newest snapshot file."""
    spec = _translator(translator).get_dataset_spec(decl)

    def _observe(context: dg.AssetExecutionContext) -> dg.ObserveResult:
        return observe_dataset(decl)

    with warnings.catch_warnings():
        # Chosen deliberately (the data is produced outside Dagster); its beta notice would
        # print on every code-location load.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.observable_source_asset(
            key=spec.key,
            group_name=spec.group_name,
            description=spec.description,
            tags=dict(spec.tags),
        )(_observe)


def build_feature_specs(
    fleet: Fleet, translator: ModelopsFleetTranslator | None = None
) -> list[dg.AssetSpec]:
    """One external asset per feature named by any contract of the fleet (deduplicated)."""
    t = _translator(translator)
    return [t.get_feature_spec(f) for f in feature_uses(fleet)]


def build_model_asset(
    fleet: Fleet, decl: ModelDecl, translator: ModelopsFleetTranslator | None = None
) -> dg.AssetsDefinition:
    """The model asset with its offline gates as blocking checks."""
    t = _translator(translator)
    spec = t.get_model_spec(fleet, decl)

    @dg.multi_asset(
        name=spec.key.to_python_identifier(),
        specs=[spec],
        check_specs=t.get_model_check_specs(fleet, decl),
    )
    def _model(
        context: dg.AssetExecutionContext,
        registry: RegistryResource,
        artifacts: ArtifactStoreResource,
        triton: TritonResource,
    ) -> Iterator[Any]:
        yield from materialize_model(
            context, fleet, decl, spec.key, registry=registry, artifacts=artifacts, triton=triton
        )

    return _model


def build_eval_report_asset(
    fleet: Fleet, decl: ModelDecl, translator: ModelopsFleetTranslator | None = None
) -> dg.AssetsDefinition:
    """Candidate vs prod per slice, read back from the registry after the model asset."""
    t = _translator(translator)
    spec = t.get_report_spec(fleet, decl)
    model_key = t.get_model_key(decl)

    @dg.multi_asset(name=spec.key.to_python_identifier(), specs=[spec])
    def _report(context: dg.AssetExecutionContext, registry: RegistryResource) -> Any:
        return materialize_eval_report(context, decl, model_key, registry=registry)

    return _report


def build_fleet_assets(
    fleet: Fleet, translator: ModelopsFleetTranslator | None = None
) -> list[dg.AssetsDefinition | dg.AssetSpec | object]:
    """Every asset of the fleet, in graph order: data, features, models, reports."""
    t = _translator(translator)
    out: list[dg.AssetsDefinition | dg.AssetSpec | object] = [
        build_dataset_asset(d, t) for d in fleet.datasets
    ]
    out.extend(build_feature_specs(fleet, t))
    out.extend(build_model_asset(fleet, m, t) for m in fleet.models)
    out.extend(build_eval_report_asset(fleet, m, t) for m in fleet.models)
    return out


def build_fleet_defs(
    fleet: Fleet,
    *,
    resources: Mapping[str, Any] | None = None,
    translator: ModelopsFleetTranslator | None = None,
) -> dg.Definitions:
    """The fleet's assets and checks.

    Resources (keys registry, artifacts, triton) are left to the caller by default, so
    `definitions.py` can merge these with jobs and sensors that share one set; pass
    `resources=resources.default_resources()` for a standalone, loadable Definitions.
    """
    return dg.Definitions(assets=build_fleet_assets(fleet, translator), resources=resources)
