"""`modelops checkpoint list|rollback|retain` through the CLI's main."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_cli import run
from test_registry_checkpoints import M, checkpoint, promote
from test_registry_kit import spec, teams

from modelops.artifacts import LocalArtifactStore
from modelops.registry import Registry

if TYPE_CHECKING:  # a fixture's type; `conftest` is not importable by name under xdist
    from conftest import FakeClock


@pytest.fixture
def learner_versions(
    registry: Registry,
    registry_url: str,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> list[int]:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELOPS_REGISTRY_URL", registry_url)
    teams(registry)
    store = LocalArtifactStore(tmp_path / "artifacts")
    vs = []
    for n in range(1, 4):
        vs.append(checkpoint(registry, clock, store, n).version.version)
        promote(registry, vs[-1])
    return vs


def one_line_refusal(registry: Registry, cmd: str, *needles: str) -> None:
    before = registry.row_counts()
    code, out, err = run(cmd)
    assert code == 1, (out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err
    assert registry.row_counts() == before


def test_list_and_rollback_by_time(registry: Registry, learner_versions: list[int]) -> None:
    v1, v2, v3 = learner_versions
    code, out, err = run(f"checkpoint list {M}")
    assert code == 0, err
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [
        [str(v1), registry.get_version(M, v1).checkpoint_at.isoformat(), "DEPRECATED"],  # type: ignore[union-attr]
        [str(v2), registry.get_version(M, v2).checkpoint_at.isoformat(), "DEPRECATED"],  # type: ignore[union-attr]
        [str(v3), registry.get_version(M, v3).checkpoint_at.isoformat(), "PROMOTED"],  # type: ignore[union-attr]
    ]
    at = registry.get_version(M, v2).checkpoint_at
    assert at is not None
    t = (at + timedelta(minutes=1)).isoformat()
    code, out, err = run(f"checkpoint rollback {M} --at {t} --actor ops")
    assert code == 0, err
    assert f"{M}@{v2}" in out and f"rolled back: {v3}" in out
    assert registry.desired_state(M).prod_version == v2
    code, out, err = run(f"checkpoint rollback {M} --at {t} --actor ops")
    assert code == 0 and "nothing changed" in out, err


def test_bad_input_is_one_error_line(
    registry: Registry, clock: FakeClock, learner_versions: list[int]
) -> None:
    one_line_refusal(
        registry, f"checkpoint rollback {M} --at yesterday --actor ops", "is not a time"
    )
    one_line_refusal(
        registry, f"checkpoint rollback {M} --at 2026-01-01T00:00:00 --actor ops", "no timezone"
    )
    one_line_refusal(
        registry,
        f"checkpoint rollback {M} --at 2026-01-01T00:00:00Z --actor ops",
        "no checkpoint of ctr at or before",
    )
    future = "2999-01-01T00:00:00Z"  # the CLI's registry reads the wall clock
    one_line_refusal(
        registry, f"checkpoint rollback {M} --at {future} --actor ops", "in the future"
    )
    registry.create_model(spec("plain"))
    one_line_refusal(
        registry,
        f"checkpoint rollback plain --at {clock.now.isoformat()} --actor ops",
        "not a continuous learner",
    )
    one_line_refusal(registry, "checkpoint list plain", "not a continuous learner")
