"""Lineage, pinning and idempotent registration, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_registry_kit import (
    contract,
    new_model,
    refused,
    spec,
    version,
    weights_hash,
)

from modelops.errors import (
    ConflictError,
    IllegalTransition,
    IntegrityError,
    NotFoundError,
    PinnedError,
    SpecError,
)
from modelops.registry import Registry, VersionKey
from modelops.spec import State, Tier

M = "ranker"


def keys(*pairs: tuple[str, int]) -> list[VersionKey]:
    return [VersionKey(model_id=m, version=v) for m, v in pairs]


def archive(reg: Registry, model: str, v: int) -> None:
    for s in reg.get_model(model).slices:
        reg.transition(model, v, State.ARCHIVED, actor="ops", slice=s)


# ---------------------------------------------------------------------------- pinning


def test_delete_is_refused_naming_every_holder(registry: Registry) -> None:
    new_model(registry)
    new_model(registry, "ctr")
    version(registry, M)
    version(registry, "ctr")
    version(registry, M)
    info = refused(
        registry,
        PinnedError,
        lambda: registry.delete_dataset("clicks", 1, actor="ops"),
        match="dataset clicks@1 is pinned by non-archived versions: ",
    )
    assert str(info.value).endswith(
        "ctr@1 (training_data), ranker@1 (training_data), ranker@2 (training_data); "
        "archive them first"
    )
    refused(
        registry,
        PinnedError,
        lambda: registry.delete_dataset("clicks-eval", 1, actor="ops"),
        match=r"eval_set clicks-eval@1 is pinned .*: ctr@1 \(eval_set\), ranker@1 \(eval_set\)",
    )
    assert registry.dependents_of_dataset("clicks", 1) == keys(("ctr", 1), (M, 1), (M, 2))


def test_archiving_every_slice_of_the_last_holder_releases_the_pin(registry: Registry) -> None:
    new_model(registry, slices=["eu", "us"])
    v1 = version(registry).version
    v2 = version(registry).version
    registry.transition(M, v1, State.ARCHIVED, actor="ops", slice="eu")
    # One slice archived is not archived: v1 still pins.
    assert not registry.get_version(M, v1).archived
    refused(
        registry,
        PinnedError,
        lambda: registry.delete_dataset("clicks", 1, actor="ops"),
        match=r"ranker@1 \(training_data\), ranker@2",
    )
    registry.transition(M, v1, State.ARCHIVED, actor="ops", slice="us")
    assert registry.get_version(M, v1).archived
    assert sorted(registry.audit_entries(M)[-1].payload["unpinned"]) == [
        "clicks-eval@1 (eval_set)",
        "clicks@1 (training_data)",
    ]
    info = refused(registry, PinnedError, lambda: registry.delete_dataset("clicks", 1, actor="o"))
    assert "ranker@1" not in str(info.value) and "ranker@2 (training_data)" in str(info.value)
    assert registry.dependents_of_dataset("clicks", 1) == keys((M, v2))

    archive(registry, M, v2)
    assert registry.dependents_of_dataset("clicks", 1) == []
    registry.delete_dataset("clicks", 1, actor="ops")
    registry.delete_dataset("clicks-eval", 1, actor="ops")
    refused(
        registry,
        NotFoundError,
        lambda: registry.get_dataset("clicks", 1),
        match="unknown dataset clicks@1; no such dataset",
    )
    # An archived version pins nothing, and its lineage still reads.
    refused(
        registry,
        IllegalTransition,
        lambda: registry.pin(M, v1, "clicks@1", role="extra", actor="ops"),
        match="ranker@1 is archived; it pins nothing",
    )
    assert registry.lineage(M)["versions"][0]["training_data"] == "clicks@1"


def test_extra_pins(registry: Registry) -> None:
    new_model(registry)
    v1 = version(registry).version
    registry.register_dataset("holdout", 3, "s3://data/holdout/3", kind="eval_set")
    assert registry.pin(M, v1, "holdout@3", role="holdout", actor="ops") is True
    before = registry.row_counts()
    assert registry.pin(M, v1, "holdout@3", role="holdout", actor="ops") is False  # idempotent
    assert registry.row_counts() == before
    refused(
        registry,
        PinnedError,
        lambda: registry.delete_dataset("holdout", 3, actor="ops"),
        match=r"ranker@1 \(holdout\)",
    )
    assert registry.dependents_of_dataset("holdout", 3) == keys((M, v1))
    refused(
        registry,
        IllegalTransition,
        lambda: registry.unpin(M, v1, "clicks@1", role="training_data", actor="ops"),
        match="part of its lineage; it is released only by archiving the version",
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.unpin(M, v1, "holdout@3", role="other", actor="ops"),
        match="ranker@1 has no other pin on holdout@3",
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.pin(M, v1, "holdout@4", role="holdout", actor="ops"),
        match="unknown dataset holdout@4; known versions: 3",
    )
    registry.unpin(M, v1, "holdout@3", role="holdout", actor="ops")
    assert registry.dependents_of_dataset("holdout", 3) == []
    registry.delete_dataset("holdout", 3, actor="ops")


# ---------------------------------------------------------------------------- dependents


def test_dependents_of_feature(registry: Registry) -> None:
    c1 = registry.register_contract(contract("ranker.features", 1, "clicks_7d", "country"))
    c2 = registry.register_contract(contract("ranker.features", 2, "clicks_7d", "age"))
    new_model(registry)
    new_model(registry, "ctr")
    v1 = version(registry, contract_ref=c1).version
    v2 = version(registry, contract_ref=c2).version
    version(registry)  # no contract
    c = version(registry, "ctr", contract_ref=c1).version
    assert registry.dependents_of_feature("clicks_7d") == keys(("ctr", c), (M, v1), (M, v2))
    assert registry.dependents_of_feature("country") == keys(("ctr", c), (M, v1))
    assert registry.dependents_of_feature("age") == keys((M, v2))
    assert registry.dependents_of_feature("nothing_reads_this") == []
    archive(registry, M, v1)
    assert registry.dependents_of_feature("country") == keys(("ctr", c))


def test_dependents_of_model(registry: Registry) -> None:
    new_model(registry, downstream=["feed"])
    v1 = version(registry).version
    v2 = version(registry, parent=v1).version
    v3 = version(registry, parent=v1).version
    assert registry.add_dependent(M, "ads", upstream_version=v2, actor="ops") is True
    before = registry.row_counts()
    assert registry.add_dependent(M, "ads", upstream_version=v2, actor="ops") is False
    assert registry.row_counts() == before
    refused(
        registry,
        SpecError,
        lambda: registry.add_dependent(M, M, actor="ops"),
        match="cannot depend on itself",
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.add_dependent(M, "ads", upstream_version=9, actor="ops"),
        match="unknown version ranker@9; the model has versions 1..3",
    )

    d1 = registry.dependents_of_model(M, v1)
    assert [k.version for k in d1.child_versions] == [v2, v3]
    assert d1.downstream_models == ["feed"]
    d2 = registry.dependents_of_model(M, v2)
    assert (d2.child_versions, d2.downstream_models) == ([], ["ads", "feed"])
    assert registry.get_version(M, v2).downstream_dependents == ["ads", "feed"]
    archive(registry, M, v3)
    assert [k.version for k in registry.dependents_of_model(M, v1).child_versions] == [v2]
    refused(
        registry,
        NotFoundError,
        lambda: registry.dependents_of_model(M, 7),
        match="unknown version ranker@7",
    )


def test_transitive_dependents_terminate_on_a_cycle(registry: Registry) -> None:
    # a -> b -> c -> a, c -> d, and e on its own.
    new_model(registry, "a", downstream=["b"])
    new_model(registry, "b", downstream=["c"])
    new_model(registry, "c", downstream=["a", "d"])
    new_model(registry, "e")
    assert registry.transitive_dependents("a") == ["b", "c", "d"]
    assert registry.transitive_dependents("b") == ["a", "c", "d"]
    assert registry.transitive_dependents("c") == ["a", "b", "d"]
    assert registry.transitive_dependents("e") == []
    registry.add_dependent("e", "a", actor="ops")
    assert registry.transitive_dependents("e") == ["a", "b", "c", "d"]
    refused(registry, NotFoundError, lambda: registry.transitive_dependents("zz"), match="'zz'")


def test_lineage_is_plain_json(registry: Registry) -> None:
    c1 = registry.register_contract(contract())
    new_model(registry, "upstream", downstream=[M])
    new_model(registry, downstream=["feed"])
    new_model(registry, "feed", downstream=["mail"])  # mail is not a model of ours
    v1 = version(registry, contract_ref=c1).version
    registry.register_dataset("holdout", 1, "s3://h/1", kind="eval_set")
    registry.pin(M, v1, "holdout@1", role="holdout", actor="ops")
    v2 = version(registry, parent=v1, passed=None).version

    lin = json.loads(json.dumps(registry.lineage(M)))
    assert lin["model"]["model_id"] == M and lin["model"]["tier"] == "L1"
    assert lin["downstream_models"] == ["feed", "mail"]
    assert lin["upstream_models"] == ["upstream"]
    first, second = lin["versions"]
    assert first == {
        "version": v1,
        "weights_hash": weights_hash(f"{M}-1"),
        "training_data": "clicks@1",
        "eval_set": "clicks-eval@1",
        "parent": None,
        "feature_contract": c1,
        "training_run_id": f"run-{M}-1",
        "code": {"preprocess": None, "postprocess": None, "training_code_version": None},
        "state": {"global": "OFFLINE_PASSED"},
        "pins": [
            "clicks-eval@1 (eval_set)",
            "clicks@1 (training_data)",
            "holdout@1 (holdout)",
        ],
    }
    assert (second["version"], second["parent"], second["state"]) == (
        v2,
        v1,
        {"global": "REGISTERED"},
    )
    refused(registry, NotFoundError, lambda: registry.lineage("nope"), match="unknown model")


# ---------------------------------------------------------------------------- idempotence


def test_register_version_is_idempotent(registry: Registry) -> None:
    new_model(registry)
    kw: dict[str, Any] = {
        "weights_hash": weights_hash("w"),
        "weights_uri": "file:///w.pt",
        "training_run_id": "run-1",
        "training_data": "clicks@1",
        "eval_set": "clicks-eval@1",
    }
    first = registry.register_version(M, **kw)
    before, audit = registry.row_counts(), len(registry.audit_entries(M))
    again = registry.register_version(M, **kw)
    assert again.version == first.version == 1
    assert again == first
    assert registry.row_counts() == before
    assert len(registry.audit_entries(M)) == audit
    # Another run with the same weights is another version.
    other = registry.register_version(M, **{**kw, "training_run_id": "run-2"})
    assert other.version == 2


def test_datasets_contracts_models_actors_are_idempotent_or_conflict(registry: Registry) -> None:
    rec = registry.register_dataset("clicks", 1, "s3://data/clicks/1")
    before = registry.row_counts()
    assert registry.register_dataset("clicks", 1, "s3://data/clicks/1") == rec
    assert registry.row_counts() == before
    refused(
        registry,
        ConflictError,
        lambda: registry.register_dataset("clicks", 1, "s3://elsewhere"),
        match="dataset clicks@1 already exists with uri 's3://data/clicks/1'.*immutable",
    )
    refused(
        registry,
        ConflictError,
        lambda: registry.register_dataset("clicks", 1, "s3://data/clicks/1", kind="eval_set"),
    )

    ref = registry.register_contract(contract())
    before = registry.row_counts()
    assert registry.register_contract(contract()) == ref == "ranker.features@1"
    assert registry.row_counts() == before
    assert registry.get_contract(ref) == contract()
    refused(
        registry,
        ConflictError,
        lambda: registry.register_contract(contract("ranker.features", 1, "other")),
        match="feature contract ranker.features@1 already exists with other features",
    )

    s = new_model(registry)
    before = registry.row_counts()
    assert registry.create_model(spec()) == s
    assert registry.row_counts() == before
    refused(
        registry,
        ConflictError,
        lambda: registry.create_model(spec(tier=Tier.L3, slices=["eu"])),
        match=r"already exists with a different spec \(fields differ: slices, tier\)",
    )

    registry.add_actor("rank-lead", "ranking")
    before = registry.row_counts()
    registry.add_actor("rank-lead", "ranking")
    assert registry.row_counts() == before
    refused(
        registry,
        ConflictError,
        lambda: registry.add_actor("rank-lead", "safety"),
        match="actor 'rank-lead' already exists in team 'ranking', not 'safety'",
    )


def test_dataset_hash_is_checked_for_local_files(registry: Registry, tmp_path: Path) -> None:
    f = tmp_path / "train.parquet"
    f.write_bytes(b"rows")
    rec = registry.register_dataset("local", 1, str(f))
    assert rec.content_hash is not None and len(rec.content_hash) == 64
    refused(
        registry,
        IntegrityError,
        lambda: registry.register_dataset("local", 2, str(f), content_hash="0" * 64),
        match="not the stated 0000",
    )
    refused(
        registry,
        SpecError,
        lambda: registry.register_dataset("local", 2, str(f), content_hash="abc"),
        match="is not a sha256",
    )


# ---------------------------------------------------------------------------- unknowns


def test_unknown_things_name_what_is_allowed(registry: Registry) -> None:
    refused(
        registry,
        NotFoundError,
        lambda: registry.get_model(M),
        match="unknown model 'ranker'; create it first with `modelops model create SPEC.yaml`",
    )
    new_model(registry)
    refused(
        registry,
        NotFoundError,
        lambda: registry.get_version(M, 1),
        match="unknown version ranker@1; the model has no versions yet",
    )
    version(registry)
    refused(
        registry,
        NotFoundError,
        lambda: registry.state_of(M, 4),
        match="unknown version ranker@4; the model has versions 1..1",
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.dependents_of_dataset("clicks", 2),
        match="unknown dataset clicks@2; known versions: 1",
    )
    refused(
        registry,
        SpecError,
        lambda: registry.register_dataset("x", 1, "s3://x", kind="table"),
        match="dataset kind 'table' is not allowed; allowed: dataset, eval_set",
    )
    refused(
        registry,
        SpecError,
        lambda: registry.register_dataset("x", 0, "s3://x"),
        match="versions start at 1",
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.get_contract("ranker.features@9"),
        match="unknown feature contract ranker.features@9",
    )

    def reg_version(**over: Any) -> None:
        kw: dict[str, Any] = {
            "weights_hash": weights_hash("new"),
            "weights_uri": "file:///new.pt",
            "training_run_id": "run-new",
            "training_data": "clicks@1",
            "eval_set": "clicks-eval@1",
        }
        kw.update(over)
        registry.register_version(M, **kw)

    refused(
        registry,
        NotFoundError,
        lambda: reg_version(training_data="clicks@5"),
        match="unknown dataset clicks@5; known versions: 1",
    )
    refused(
        registry,
        SpecError,
        lambda: reg_version(training_data="clicks"),
        match="--training-data 'clicks' is malformed; allowed form is NAME@VERSION",
    )
    refused(
        registry,
        SpecError,
        lambda: reg_version(eval_set="clicks@1"),
        match="eval set clicks@1 is registered as a dataset; eval set must be a eval_set",
    )
    refused(
        registry,
        NotFoundError,
        lambda: reg_version(feature_contract_ref="ranker.features@1"),
        match="unknown feature contract ranker.features@1; register it first",
    )
    refused(
        registry,
        NotFoundError,
        lambda: reg_version(parent=9),
        match="unknown version ranker@9",
    )
    refused(
        registry,
        SpecError,
        lambda: reg_version(training_run_id=""),
        match="training_run_id is required",
    )
    refused(
        registry,
        NotFoundError,
        lambda: registry.register_version(
            "nope",
            weights_hash=weights_hash("x"),
            weights_uri="file:///x",
            training_run_id="r",
            training_data="clicks@1",
            eval_set="clicks-eval@1",
        ),
        match="unknown model 'nope'",
    )
    assert [v.version for v in registry.list_versions(M)] == [1]


@pytest.mark.parametrize("bad", ["LIVE", "promote", ""])
def test_unknown_state_lists_the_states(registry: Registry, bad: str) -> None:
    new_model(registry)
    version(registry)
    info = refused(registry, SpecError, lambda: registry.transition(M, 1, bad, actor="ops"))
    assert f"unknown state {bad!r}; allowed: " + ", ".join(s.value for s in State) == str(
        info.value
    )
