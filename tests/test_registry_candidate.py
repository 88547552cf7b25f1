"""`register_candidate`: a trained candidate's whole registration in one transaction.

The model asset used to make eight calls, each its own transaction, so a crash between
them left a model without its version, or datasets nobody pinned. One call now writes
team, model, contract, datasets and version together or not at all, answers a
redelivery with the version it already made, and gives one version to processes racing
the same training run. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from test_registry_kit import (
    bootstrap_prod,
    contract,
    refused,
    spec,
    teams,
    weights_hash,
)

from modelops.errors import ConflictError, NotFoundError, PinnedError, SpecError
from modelops.registry import Candidate, DatasetInput, Registry
from modelops.spec import State, VersionMeta
from modelops.store.tables import teams as teams_table

M = "ranker"
TRAIN = DatasetInput(name="clicks", version=1, uri="s3://data/clicks/1")
EVALS = DatasetInput(name="clicks-eval", version=1, uri="s3://data/clicks-eval/1")


def candidate(reg: Registry, run: str = "run-1", label: str | None = None, **kw: Any) -> Candidate:
    model_spec = kw.pop("model_spec", spec(M))
    args: dict[str, Any] = {
        "weights_hash": weights_hash(label or run),
        "weights_uri": f"file:///weights/{label or run}.pt",
        "training_run_id": run,
        "training_data": TRAIN,
        "eval_set": EVALS,
        "contract": contract(),
        "meta": VersionMeta(eval_metrics={"auc": 0.91}),
        "ensure_team_by": "system:fleet",
    }
    args.update(kw)
    return reg.register_candidate(model_spec, **args)


def test_one_call_registers_team_model_contract_datasets_and_version(registry: Registry) -> None:
    before = registry.row_counts()
    c = candidate(registry)
    assert c.created and c.version.version == 1 and c.contract_ref == "ranker.features@1"
    assert c.version.state == {"global": State.REGISTERED}
    assert c.version.eval_metrics == {"auc": 0.91}
    assert c.prod_versions == {}
    # Each part left the entry its own call leaves, so the chains replay as before.
    assert [(e.action, e.actor) for e in registry.audit_entries(None)] == [
        ("add_team", "system:fleet"),
        ("register_contract", "system"),
        ("register_dataset", "system"),
        ("register_dataset", "system"),
    ]
    assert [e.action for e in registry.audit_entries(M)] == ["register_model", "register_version"]
    assert registry.get_dataset("clicks-eval", 1).kind == "eval_set"
    assert registry.get_version(M, 1) == c.version
    assert registry.verify_audit().ok
    after = registry.row_counts()
    assert after["model_versions"] == before["model_versions"] + 1
    assert after["dataset_pins"] == before["dataset_pins"] + 2


def test_redelivery_returns_the_same_version_and_writes_nothing(registry: Registry) -> None:
    first = candidate(registry)
    before = registry.row_counts()
    # A retrain of the same run gives other bytes (exports are not byte-stable): same version.
    again = candidate(registry, label="run-1-retrained")
    assert not again.created
    assert again.version.version == first.version.version
    assert again.version.weights_hash == first.version.weights_hash
    assert registry.row_counts() == before
    # A new run is a new version, and its parts already registered write nothing.
    second = candidate(registry, run="run-2")
    assert second.created and second.version.version == 2
    assert [e.action for e in registry.audit_entries(None)].count("register_dataset") == 2


def test_find_candidate_answers_before_training(registry: Registry) -> None:
    assert registry.find_candidate(M, "run-1") is None  # no such model yet
    c = candidate(registry)
    assert registry.find_candidate(M, "run-1") == c.version
    assert registry.find_candidate(M, "run-2") is None


def test_a_failure_midway_leaves_no_partial_rows(registry: Registry) -> None:
    # The eval set's name and version exist with other bytes: refused after team, model,
    # contract and training data were written in the same transaction.
    registry.register_dataset("clicks-eval", 1, "s3://elsewhere/1", kind="eval_set")
    refused(registry, ConflictError, lambda: candidate(registry), match="clicks-eval@1")
    with pytest.raises(NotFoundError):
        registry.get_model(M)
    assert registry.list_teams() == []
    # Refused at the last step (an unknown parent version): nothing either.
    fixed = EVALS.model_copy(update={"name": "clicks-eval-2"})
    refused(
        registry,
        NotFoundError,
        lambda: candidate(registry, eval_set=fixed, parent=7),
        match="unknown version ranker@7",
    )
    # The rolled-back model left nothing cached: a different spec under its id registers.
    c = candidate(registry, eval_set=fixed, model_spec=spec(M, slices=["us", "eu"]))
    assert c.created and set(c.version.state) == {"us", "eu"}


def test_refusals_write_nothing(registry: Registry) -> None:
    # Without a voucher an unknown owner team is refused, as create_model refuses it.
    refused(registry, NotFoundError, lambda: candidate(registry, ensure_team_by=None), "team")
    candidate(registry)
    # A different spec under the same id, an edited contract, the same run with other data.
    refused(
        registry,
        ConflictError,
        lambda: candidate(registry, model_spec=spec(M, tier="L2")),
        "different spec",
    )
    refused(
        registry,
        ConflictError,
        lambda: candidate(registry, run="run-2", contract=contract("ranker.features", 1, "x")),
        "immutable",
    )
    other = TRAIN.model_copy(update={"name": "clicks-2"})
    refused(
        registry,
        ConflictError,
        lambda: candidate(registry, training_data=other),
        "training run run-1 already registered",
    )
    # An eval set offered as training data is still not training data.
    as_train = EVALS.model_copy(update={"kind": "eval_set"})
    refused(
        registry,
        SpecError,
        lambda: candidate(registry, run="run-3", training_data=as_train),
        "training data must be a dataset",
    )
    # Filed under the training role's kind, it collides with the eval set of that name.
    refused(
        registry,
        ConflictError,
        lambda: candidate(registry, run="run-3", training_data=EVALS),
        "immutable",
    )
    refused(registry, SpecError, lambda: candidate(registry, training_run_id=""), "run_id")


def test_candidate_lineage_is_pinned(registry: Registry) -> None:
    candidate(registry)
    with pytest.raises(PinnedError):
        registry.delete_dataset("clicks", 1, actor="ops")


def test_prod_versions_come_from_the_desired_state(registry: Registry) -> None:
    candidate(registry)
    registry.record_gate_result(M, 1, passed=True, results={"auc": 0.9})
    registry.transition(M, 1, State.PROMOTED, actor="ops")
    c = candidate(registry, run="run-2")
    assert c.prod_versions == {"global": 1}
    # Its own prod version is not a baseline to compare against.
    assert candidate(registry, run="run-1").prod_versions == {}


def test_candidate_next_to_kit_built_versions(registry: Registry) -> None:
    """A model built with the single calls takes candidates too (the asset's old path)."""
    teams(registry)
    registry.register_dataset("clicks", 1, TRAIN.uri)
    registry.register_dataset("clicks-eval", 1, EVALS.uri, kind="eval_set")
    registry.create_model(spec(M))
    bootstrap_prod(registry, M)
    c = candidate(registry, run="run-new", ensure_team_by=None, contract=None)
    assert c.created and c.version.version == 2 and c.prod_versions == {"global": 1}


# ----------------------------------------------------------------------- the write helper


def test_a_mutation_without_its_audit_entry_rolls_back(registry: Registry) -> None:
    """The helper every write goes through refuses to commit a change nobody audited."""
    before = registry.row_counts()
    with pytest.raises(RuntimeError, match="without its audit entry"):
        with registry._write("ops") as op:
            op.conn.execute(insert(teams_table).values(name="ghost", created_at="2026"))
    assert registry.row_counts() == before
    with pytest.raises(RuntimeError, match="exactly one audit entry"):
        with registry._write("ops") as op:
            op.audit("alert", {"kind": "a"})
            op.audit("alert", {"kind": "b"})
    assert registry.row_counts() == before


# ----------------------------------------------------------------------- real concurrency

PROCS = 4


def _race(url: str, run: str, label: str, barrier: Any, out: Any) -> None:
    try:
        with Registry(url, auto_upgrade=False) as reg:
            barrier.wait(timeout=60)
            c = candidate(reg, run=run, label=label)
            out.put(("ok", c.version.version, c.created, c.version.weights_hash))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        out.put(("error", traceback.format_exc(), None, None))


@pytest.mark.parametrize("phase", ["first registration", "redelivery"])
def test_racing_processes_get_one_version(registry_url: str, phase: str, tmp_path: Path) -> None:
    """Processes race one training run, each with its own retrain's bytes: one version.

    On a fresh registry every part is new, so the losers collide on the team, model and
    dataset rows (PostgreSQL: unique violations, retried); on redelivery they collide on
    the model's lock and find the winner's version.
    """
    with Registry(registry_url, auto_upgrade=True) as reg:
        if phase == "redelivery":
            teams(reg)
            reg.register_dataset("clicks", 1, TRAIN.uri)
            reg.register_dataset("clicks-eval", 1, EVALS.uri, kind="eval_set")
            reg.register_contract(contract())
            reg.create_model(spec(M))
        before = reg.row_counts()
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(PROCS), ctx.Queue()
    procs = [
        ctx.Process(
            target=_race, args=(registry_url, "run-race", f"bytes-{i}", barrier, out), daemon=True
        )
        for i in range(PROCS)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r[1] for r in results if r[0] == "error"]
    assert errors == []
    assert {r[1] for r in results} == {1}
    assert Counter(r[2] for r in results) == Counter({True: 1, False: PROCS - 1})
    winner = next(r[3] for r in results if r[2])
    assert {r[3] for r in results} == {winner}
    with Registry(registry_url) as reg:
        assert [v.version for v in reg.list_versions(M)] == [1]
        actions = Counter(e.action for e in reg.audit_entries(None) + reg.audit_entries(M))
        assert actions["register_version"] == 1 and actions["register_model"] == 1
        assert actions["register_dataset"] == 2 and actions["register_contract"] == 1
        assert reg.verify_audit().ok
        after = reg.row_counts()
        assert after["model_versions"] == before["model_versions"] + 1
