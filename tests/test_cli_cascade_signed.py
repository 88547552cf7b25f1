"""`modelops sign-cascade` and `rollback plan --cascade --approve FILE`, through the CLI's main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import run
from test_cli_rollback import one_line_refusal
from test_registry_kit import approve, key_of, version
from test_rollback_irreversible import E, Fleet

from modelops.identity import write_keypair
from modelops.registry import Registry
from modelops.spec import State as S


@pytest.fixture
def keys(
    registry: Registry, registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELOPS_REGISTRY_URL", registry_url)
    Fleet(registry, tmp_path)
    v = version(registry, "reporting").version  # an L2 dependent serving a version
    approve(registry, "reporting", v, "safety-lead", target=S.PROMOTED)
    registry.transition("reporting", v, S.PROMOTED, actor="rank-eng", expected=S.OFFLINE_PASSED)
    for who in ("safety-lead", "ops"):
        write_keypair(key_of(who), tmp_path / f"{who}.key")
    return tmp_path


def test_sign_then_plan_with_the_signed_approval(keys: Path, registry: Registry) -> None:
    sig = keys / "sl.sig"
    code, out, err = run(
        f"sign-cascade {E} reporting --actor safety-lead --key {keys / 'safety-lead.key'} "
        f"--out {sig}"
    )
    assert code == 0, err
    assert "signed cascade approval of reporting@" in out
    assert json.loads(sig.read_text())["payload"]["cascade_root"] == E
    before = registry.row_counts()
    code, out, err = run(f"rollback plan {E} --actor ops --cascade --approve {sig} --json")
    assert code == 0, err
    [rep] = [d for d in json.loads(out)["dependents"] if d["model_id"] == "reporting"]
    assert (rep["action"], rep["approvers"]) == ("cascade", ["safety-lead"])
    assert registry.row_counts() == before  # a dry run consumes no nonce


def test_the_acting_actor_cannot_sign_its_own_cascade(keys: Path, registry: Registry) -> None:
    sig = keys / "ops.sig"
    code, _, err = run(
        f"sign-cascade {E} reporting --actor ops --key {keys / 'ops.key'} --out {sig}"
    )
    assert code == 0, err
    one_line_refusal(
        registry, f"rollback plan {E} --actor ops --cascade --approve {sig}", "acting actor"
    )
    one_line_refusal(
        registry,
        f"sign-cascade {E} nope --actor ops --key {keys / 'ops.key'}",
        "nothing to cascade into",
    )
