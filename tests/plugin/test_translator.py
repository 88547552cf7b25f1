"""The fleet translator: the default specs are the ones the UI has always shown, and one
overridden method changes that one thing everywhere it is used (keys, deps, checks)."""

from __future__ import annotations

import dagster as dg

import assets
from assets import ModelopsFleetTranslator, build_fleet_defs
from modelops.fleet import Fleet, ModelDecl
from resources import default_resources


class Prefixed(ModelopsFleetTranslator):
    """A platform that keeps models under its own prefix and adds a cost-centre label."""

    def get_model_key(self, decl: ModelDecl) -> dg.AssetKey:
        return dg.AssetKey(["ml", "models", decl.model_id])

    def get_model_metadata(self, decl: ModelDecl) -> dict[str, object]:
        return {**super().get_model_metadata(decl), "cost_centre": decl.spec.owner_team}


def _graph(fleet: Fleet, translator: ModelopsFleetTranslator | None = None) -> object:
    defs = build_fleet_defs(fleet, resources=default_resources(), translator=translator)
    return defs.resolve_asset_graph()


def test_default_translator_gives_the_same_graph_as_no_translator(demo_fleet: Fleet) -> None:
    plain, explicit = _graph(demo_fleet), _graph(demo_fleet, ModelopsFleetTranslator())
    keys = plain.get_all_asset_keys()
    assert keys == explicit.get_all_asset_keys()
    for k in keys:
        a, b = plain.get(k), explicit.get(k)
        assert (a.description, a.tags, a.group_name, a.owners) == (
            b.description,
            b.tags,
            b.group_name,
            b.owners,
        )
        assert set(a.parent_keys) == set(b.parent_keys)


def test_an_overridden_key_moves_the_model_its_checks_and_its_report_dependency(
    demo_fleet: Fleet,
) -> None:
    defs = build_fleet_defs(demo_fleet, resources=default_resources(), translator=Prefixed())
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {f"ml/models/{m.model_id}" for m in demo_fleet.models} <= keys
    assert not any(k.startswith("models/") for k in keys)
    report = graph.get(dg.AssetKey(["eval_reports", "ctr_gbdt"]))
    assert dg.AssetKey(["ml", "models", "ctr_gbdt"]) in report.parent_keys
    model_key = dg.AssetKey(["ml", "models", "ctr_gbdt"])
    ad = defs.get_assets_def(model_key)
    assert {c.asset_key for c in ad.check_specs} == {model_key}
    assert {c.name for c in ad.check_specs} == set(assets.GATE_NAMES)
    node = graph.get(model_key)
    assert node.metadata["cost_centre"] == demo_fleet.model("ctr_gbdt").spec.owner_team
    assert node.metadata["tier"] == "L1"  # the base method's entries are kept


def test_feature_uses_are_deduplicated_across_contracts(demo_fleet: Fleet) -> None:
    uses = assets.feature_uses(demo_fleet)
    names = [u.name for u in uses]
    assert names == sorted(set(names))
    contracts = {c.ref for c in demo_fleet.feature_contracts}
    assert all(u.contracts and set(u.contracts) <= contracts for u in uses)
    spec = ModelopsFleetTranslator().get_feature_spec(uses[0])
    assert spec.key == dg.AssetKey(["features", uses[0].name])
    assert spec.metadata["dtype"] == uses[0].dtype
