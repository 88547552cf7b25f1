"""What registration returns is what a later read sees, on both backends."""

from __future__ import annotations

from modelops.registry import Registry
from modelops.spec import CodeRef, ModelSpec, VersionMeta


def test_register_returns_what_get_version_reads(registry: Registry) -> None:
    registry.register_dataset("c", 1, "s3://x/c", kind="dataset")
    registry.register_dataset("e", 1, "s3://x/e", kind="eval_set")
    registry.add_team("a")
    registry.create_model(
        ModelSpec(
            model_id="m",
            owner_team="a",
            tier="L2",
            rollback_class="STATE_SNAPSHOT",
            model_class="dnn",
            framework="pytorch",
            policy={"primary_metric": "auc"},
            slices=["global", "eu"],
            downstream_dependents=["ranker"],
        )
    )
    meta = VersionMeta(
        eval_metrics={"auc": 0.81},
        eval_slice_metrics={"eu": {"auc": 0.79}},
        preprocess=CodeRef(repo="git@x:feat", commit_sha="abc1234", path="pre.py"),
        training_code_version=CodeRef(repo="git@x:train", commit_sha="def5678"),
        rollback_snapshot_uri="s3://snap/1",
        downstream_dependents=["index"],
        signature={"inputs": [{"name": "features", "datatype": "FP32", "dims": [8]}]},
    )
    v = registry.register_version(
        "m",
        weights_hash="a" * 64,
        weights_uri="file:///w",
        training_run_id="r1",
        training_data="c@1",
        eval_set="e@1",
        meta=meta,
    )
    assert v == registry.get_version("m", 1)
    assert v.downstream_dependents == ["index", "ranker"]
    assert v.state == {"global": "REGISTERED", "eu": "REGISTERED"}
    again = registry.register_version(
        "m",
        weights_hash="a" * 64,
        weights_uri="file:///w",
        training_run_id="r1",
        training_data="c@1",
        eval_set="e@1",
        meta=meta,
    )
    assert again == v
