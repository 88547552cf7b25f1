"""A continuous learner's refresh schedule in the fleet file comes from its checkpoint cadence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from modelops.errors import SpecError
from modelops.fleet import load_fleet

DEMO = Path(__file__).resolve().parents[1] / "demo" / "fleet.yaml"


def _fleet(tmp_path: Path, every: int, cron: str | None) -> Path:
    data: dict[str, Any] = yaml.safe_load(DEMO.read_text())
    m = data["models"][0]
    m["spec"]["continuous"] = {"checkpoint_every_hours": every, "retain_checkpoints": 4}
    m.pop("refresh_cron", None)
    if cron is not None:
        m["refresh_cron"] = cron
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("every", "cron", "want"),
    [(4, None, "0 */4 * * *"), (24, None, "0 0 * * *"), (6, "15 */6 * * *", "15 */6 * * *")],
)
def test_schedule_comes_from_the_cadence(
    tmp_path: Path, every: int, cron: str | None, want: str
) -> None:
    decl = load_fleet(_fleet(tmp_path, every, cron)).models[0]
    assert decl.spec.continuous is not None
    assert decl.refresh_cron == want


@pytest.mark.parametrize(
    ("every", "cron", "needle"),
    [
        (6, "0 */4 * * *", "its refresh schedule is '0 */6 * * *'"),
        (5, None, "does not divide a day"),
    ],
)
def test_a_disagreeing_schedule_is_one_line(
    tmp_path: Path, every: int, cron: str | None, needle: str
) -> None:
    path = _fleet(tmp_path, every, cron)
    with pytest.raises(SpecError) as info:
        load_fleet(path)
    assert needle in str(info.value) and "\n" not in str(info.value)
