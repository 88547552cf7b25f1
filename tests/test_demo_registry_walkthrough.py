"""The registry walkthrough (`python -m demo.registry_walkthrough`) still tells its story end
to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo import registry_walkthrough as demo


def test_walkthrough_runs_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the walkthrough points MODELOPS_HOME at its home; restore it afterwards
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "walk"))
    demo.run(tmp_path / "walk")  # a step with an unexpected exit code raises SystemExit
    out = capsys.readouterr().out
    assert "refused with exit 1, as it should be" in out
    assert "== done" in out
    assert (tmp_path / "walk" / "registry.db").exists()
