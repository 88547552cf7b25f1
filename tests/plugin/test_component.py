"""The fleet Component: discovered through the registry entry point, loaded from YAML."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster.components.core.package_entry import discover_entry_point_package_objects
from dagster.components.testing import create_defs_folder_sandbox

from assets.component import ModelopsFleetComponent
from modelops.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
DEMO_FLEET = ROOT / "demo" / "fleet.yaml"


def test_component_is_registered_through_the_entry_point() -> None:
    found = {
        (k.namespace, k.name): obj for k, obj in discover_entry_point_package_objects().items()
    }
    assert found[("assets.component", "ModelopsFleetComponent")] is ModelopsFleetComponent


def test_component_loads_from_yaml_relative_to_its_folder(home: Path) -> None:
    with create_defs_folder_sandbox() as sandbox:
        folder = sandbox.defs_folder_path / "fleet"
        folder.mkdir()
        shutil.copyfile(DEMO_FLEET, folder / "fleet.yaml")
        (folder / "defs.yaml").write_text(
            "type: assets.component.ModelopsFleetComponent\nattributes:\n  fleet_file: fleet.yaml\n"
        )
        with sandbox.load_component_and_build_defs(defs_path=folder) as (component, defs):
            assert isinstance(component, ModelopsFleetComponent)
            graph = defs.resolve_asset_graph()
            keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
            assert {
                "models/ctr_gbdt",
                "models/ctr_mlp",
                "models/ctr_keras",
                "models/credit_limit",
                "datasets/ctr_clicks",
                "eval_sets/ctr_eval",
                "eval_reports/ctr_gbdt",
                "features/f0",
            } <= keys
            checks = {k.name for k in graph.asset_check_keys}
            assert "gate_latency_memory_slo" in checks
            # The embedded resources come with it, so the location loads as is.
            assert {"registry", "artifacts", "triton"} <= set(defs.resources or {})
    # Loading touched nothing: no registry, no data, no Triton.
    assert not (home / "registry.db").exists()


def test_component_accepts_an_absolute_path_and_reports_bad_fleets(tmp_path: Path) -> None:
    defs = ModelopsFleetComponent(fleet_file=str(DEMO_FLEET)).build_defs(
        dg.ComponentTree.for_test().load_context
    )
    assert dg.AssetKey(["models", "ctr_mlp"]) in defs.resolve_asset_graph().get_all_asset_keys()

    bad = tmp_path / "fleet.yaml"
    bad.write_text(DEMO_FLEET.read_text().replace("dataset: ctr_clicks", "dataset: nope", 1))
    with pytest.raises(SpecError, match="nope"):
        ModelopsFleetComponent(fleet_file=str(bad)).build_defs(
            dg.ComponentTree.for_test().load_context
        )
