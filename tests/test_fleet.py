"""The fleet declaration: the demo fleet loads, and each mistake is one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelops.errors import SpecError
from modelops.fleet import Fleet, load_fleet
from modelops.spec import RollbackClass, Tier

DEMO = Path(__file__).resolve().parents[1] / "demo" / "fleet.yaml"


def test_demo_fleet_loads_with_the_cores_spec() -> None:
    fleet = load_fleet(DEMO)
    assert [m.model_id for m in fleet.models] == [
        "ctr_gbdt",
        "ctr_mlp",
        "ctr_keras",
        "credit_limit",
    ]
    assert {m.spec.framework.value for m in fleet.models} == {"onnx", "pytorch", "tensorflow"}
    l3 = fleet.model("credit_limit")
    assert (l3.spec.tier, l3.spec.rollback_class) == (Tier.L3, RollbackClass.IRREVERSIBLE)
    assert fleet.canary_ladder == [1, 5, 10]
    assert fleet.contract("ctr_features").version == 1


def _broken(tmp_path: Path, edit) -> str:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(DEMO.read_text())
    edit(data)
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpecError) as info:
        load_fleet(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    return msg


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: d["models"][0].update(dataset="nope"), "dataset 'nope' is not declared"),
        (lambda d: d["models"][0].update(eval_set="ctr_clicks"), "eval_set 'ctr_clicks'"),
        (lambda d: d["models"][0].update(trainer="no colon"), "use module.path:function"),
        (lambda d: d["models"][0].update(refresh_cron="often"), "5-field cron"),
        (lambda d: d["models"][0].update(feature_contract="x"), "feature_contract 'x'"),
        (lambda d: d["models"][0]["spec"].update(tier="L9"), "L0"),
        (lambda d: d["models"][1]["spec"].update(model_id="ctr_gbdt"), "unique"),
        (lambda d: d.update(canary_ladder=[5, 1]), "strictly increasing"),
        (lambda d: d["models"][0]["online"].update(max_error_rate=2), "max_error_rate"),
        (lambda d: d.update(surprise=1), "surprise"),
    ],
)
def test_fleet_mistakes_are_one_line(tmp_path: Path, edit, needle: str) -> None:  # type: ignore[no-untyped-def]
    assert needle in _broken(tmp_path, edit)


def test_fleet_defaults_are_production_durations() -> None:
    fleet = Fleet.model_validate(
        {
            "datasets": [{"name": "d"}, {"name": "e", "kind": "eval_set"}],
            "models": [
                {
                    "spec": yaml.safe_load(DEMO.read_text())["models"][0]["spec"],
                    "trainer": "m:f",
                    "dataset": "d",
                    "eval_set": "e",
                }
            ],
        }
    )
    assert fleet.durations.shadow_s == 7 * 86400
    assert fleet.durations.ab_min_s == 14 * 86400
    assert fleet.durations.watch_s == 48 * 3600
