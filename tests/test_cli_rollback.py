"""`modelops rollback plan` and NEEDS_RETRAIN in `modelops show`, through the CLI's main."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import run
from test_rollback_irreversible import E, Fleet, serve_reporting

from modelops.registry import Registry
from modelops.rollback import run_rollback


@pytest.fixture
def fleet(
    registry: Registry, registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Fleet:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELOPS_REGISTRY_URL", registry_url)
    return Fleet(registry, tmp_path)


def one_line_refusal(registry: Registry, cmd: str, *needles: str) -> str:
    before = registry.row_counts()
    code, out, err = run(cmd)
    assert code == 1, (out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err
    assert registry.row_counts() == before
    return err


def test_plan_is_a_dry_run_over_the_closure(fleet: Fleet, registry: Registry) -> None:
    before = registry.row_counts()
    code, out, err = run(f"rollback plan {E} --actor ops --version {fleet.v2}")
    assert code == 0, err
    assert "dry run, nothing changed" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["ranker"][4] == "needs_retrain"
    assert rows["retrieval"][4] == "restore_state"
    assert rows["dashboard"][4] == "warn" and rows["reporting"][2] == "L2"
    assert registry.row_counts() == before
    # A name is not an approval: cascade approvals are signed (tests/test_rollback_cascade_signed).
    one_line_refusal(
        registry,
        f"rollback plan {E} --actor ops --cascade --approve reporting=safety-lead --json",
        "unsigned",
    )


def test_plan_refusals_are_one_line(fleet: Fleet, registry: Registry) -> None:
    serve_reporting(registry)
    one_line_refusal(
        registry, f"rollback plan {E} --actor ops --cascade", "reporting (tier L2) needs 1 approval"
    )
    one_line_refusal(registry, "rollback plan nope --actor ops", "unknown model 'nope'")
    one_line_refusal(
        registry, f"rollback plan {E} --actor ops --cascade --approve reporting", "unsigned"
    )
    one_line_refusal(
        registry,
        f"rollback plan {E} --actor ops --cascade --approve reporting=nobody",
        "unsigned",
    )
    one_line_refusal(registry, f"rollback {E} --actor ops --cascade", "rollback plan MODEL")


def test_show_marks_needs_retrain_until_a_new_version(fleet: Fleet, registry: Registry) -> None:
    run_rollback(registry, fleet.artifacts, E, fleet.v2, actor="ops")
    code, out, _ = run("show ranker")
    assert code == 0 and f"NEEDS_RETRAIN: rollback of {E}@{fleet.v2}" in out
    code, out, _ = run("show ranker --json")
    [mark] = json.loads(out)["needs_retrain"]
    assert mark["source_model"] == E
    from test_registry_kit import version

    version(registry, "ranker")
    assert "NEEDS_RETRAIN" not in run("show ranker")[1]


def test_cli_transition_into_canary_takes_the_snapshot(
    registry: Registry, registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_rollback_state_restore import App, make_model, store

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELOPS_REGISTRY_URL", registry_url)
    App(tmp_path / "state.db", "counters").put(1, 1)
    v2 = make_model(registry, [store(tmp_path / "state.db", "counters")])
    code, out, err = run(f"transition ranker {v2} canary --percent 5 --actor ops")
    assert code == 0, err
    [snap] = registry.snapshots_of("ranker", v2)
    assert registry.get_version("ranker", v2).rollback_snapshot_uri == snap.uri
    assert (tmp_path / "home" / "artifacts").is_dir()  # the CLI's default artifact store


def test_cli_transition_with_an_unreachable_store_is_one_line(
    registry: Registry, registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_rollback_state_restore import make_model, store

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELOPS_REGISTRY_URL", registry_url)
    v2 = make_model(registry, [store(tmp_path / "gone" / "state.db", "counters")])
    err = one_line_refusal(
        registry, f"transition ranker {v2} CANARY --actor ops", "refused, nothing moved"
    )
    assert "'counters'" in err
    assert registry.state_of("ranker", v2).value == "APPROVED_CANARY"


def test_cli_rollback_is_not_gated_by_a_corrupt_snapshot(
    registry: Registry, registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the job, the command line never lets state block the traffic cutover: with the
    entry snapshot corrupt, `modelops rollback` still puts v1 back (it moves traffic only;
    the store stays as it is, for the rollback job to restore once the snapshot verifies)."""
    from test_rollback_state_restore import App, make_model, store, tamper

    from modelops.artifacts import LocalArtifactStore
    from modelops.rollback import enter_with_snapshots
    from modelops.spec import State

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELOPS_REGISTRY_URL", registry_url)
    app = App(tmp_path / "state.db", "counters")
    app.put(1, 1)
    v2 = make_model(registry, [store(tmp_path / "state.db", "counters")])
    artifacts = LocalArtifactStore(tmp_path / "home" / "artifacts")
    enter_with_snapshots(registry, artifacts, "ranker", v2, State.CANARY, actor="ops", percent=5)
    app.put(1, 2)
    tamper(artifacts, registry, v2, "counters")
    code, out, err = run(f"rollback ranker --version {v2} --actor ops")
    assert code == 0, err
    assert registry.state_of("ranker", v2) is State.ROLLED_BACK
    assert registry.state_of("ranker", 1) is State.PROMOTED
    assert app.rows() == {1: 2}
