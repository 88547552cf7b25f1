"""From logged predictions to the engines: the join, the scores, the feature columns, and the
policies read from the spec. The engines themselves are tested in test_shadow / test_drift;
here the wiring must hand them exactly the arrays a direct call would."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from modelops.evaluation.drift import PREDICTION, build_reference, drift_report
from modelops.evaluation.logged import (
    drift_from_log,
    drift_policy,
    feature_columns,
    pair_records,
    score_of,
    shadow_from_log,
    shadow_policy,
)
from modelops.evaluation.shadow import shadow_divergence
from modelops.spec import DriftThresholds, ShadowThresholds


def rec(
    rid: str,
    score: Any = None,
    *,
    error: str | None = None,
    features: Any = None,
    slice_: str = "global",
    latency: float = 5.0,
    name: str = "probability",
) -> Any:
    """A logged prediction as the reader returns it (the fields the wiring reads)."""
    outputs = None
    if score is not None:
        data = score if isinstance(score, list) else [score]
        outputs = {"outputs": [{"name": "other", "data": [0.0] * len(data)},
                               {"name": name, "data": data}]}  # fmt: skip
    return SimpleNamespace(
        request_id=rid, ts=0.0, slice=slice_, latency_ms=latency, error=error,
        outputs=outputs, features=features,
    )  # fmt: skip


def test_score_of_reads_the_named_or_first_output() -> None:
    out = {"outputs": [{"name": "a", "data": [[0.2]]}, {"name": "b", "data": [0.1, 0.9]}]}
    assert score_of(out) == 0.2
    assert score_of(out, "b") == [0.1, 0.9]
    assert score_of(out, "missing") is None
    assert score_of(None) is None and score_of({"outputs": []}) is None


def test_pairs_join_on_request_id_and_flag_failures() -> None:
    prod = [rec("a", 0.1), rec("b", 0.2), rec("c", 0.3), rec("b", 0.25), rec("x", 0.9)]
    shadow = [rec("c", 0.35, latency=9.0), rec("a", 0.15), rec("b", None, error="timeout"),
              rec("y", 0.5)]  # fmt: skip
    pairs = pair_records(prod, shadow, "probability")
    # Only ids both logged, once each (a reused id: the last record wins), in id order.
    assert pairs.request_ids.tolist() == ["a", "b", "c"]
    assert pairs.prod.tolist() == [0.1, 0.25, 0.3]
    assert pairs.shadow[[0, 2]].tolist() == [0.15, 0.35]
    assert pairs.shadow_error.tolist() == [False, True, False]
    assert pairs.prod_error.tolist() == [False, False, False]
    assert pairs.shadow_latency_ms.tolist() == [5.0, 5.0, 9.0]


def test_shadow_from_log_hands_the_engine_what_a_direct_call_would() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    p = rng.uniform(size=n)
    s = np.clip(p + rng.normal(0, 0.05, size=n), 0, 1)
    slices = np.where(rng.uniform(size=n) < 0.5, "us", "de")
    y = (rng.uniform(size=n) < p).astype(float)
    prod = [rec(f"r{i}", float(p[i]), slice_=str(slices[i])) for i in range(n)]
    shadow = [rec(f"r{i}", float(s[i]), slice_=str(slices[i])) for i in range(n)][::-1]
    labels = {f"r{i}": float(y[i]) for i in range(n)}
    thr = ShadowThresholds(score_output="probability", min_agreement=0.9)
    got = shadow_from_log(prod, shadow, thr, labels=labels)
    order = np.argsort(np.array([f"r{i}" for i in range(n)]))  # the join sorts by id
    want = shadow_divergence(
        p[order], s[order], shadow_policy(thr), labels=y[order], slices=slices[order],
        prod_latency_ms=np.full(n, 5.0), shadow_latency_ms=np.full(n, 5.0),
        prod_error=np.zeros(n, bool), shadow_error=np.zeros(n, bool),
    )  # fmt: skip
    assert got == want
    assert got.ece_prod is not None and set(got.slices) == {"de", "us"}
    # A label missing for one pair: calibration is not measured on a biased subset.
    del labels["r7"]
    assert shadow_from_log(prod, shadow, thr, labels=labels).ece_prod is None


def test_class_probabilities_are_compared_top1() -> None:
    prod = [rec(f"r{i}", [0.7, 0.2, 0.1]) for i in range(1200)]
    shadow = [rec(f"r{i}", [0.1, 0.2, 0.7] if i % 2 else [0.6, 0.3, 0.1]) for i in range(1200)]
    report = shadow_from_log(prod, shadow, ShadowThresholds(score_output="probability"))
    assert report.agreement == pytest.approx(0.5)
    assert report.verdict == "fail"


def test_policies_from_the_spec_keep_every_threshold() -> None:
    thr = ShadowThresholds(min_agreement=0.8, max_kl=0.2, bins=30, score_output="p")
    pol = shadow_policy(thr)
    assert (pol.min_agreement, pol.max_kl, pol.bins) == (0.8, 0.2, 30)
    d = drift_policy(DriftThresholds(psi_threshold=0.3, min_rows=50, window_s=60))
    assert (d.psi_threshold, d.min_rows) == (0.3, 50)


def _reference() -> Any:
    rng = np.random.default_rng(1)
    cols = {"f0": rng.normal(size=4000), "f1": rng.normal(size=4000)}
    return build_reference(cols, prediction=rng.uniform(size=4000))


def test_feature_columns_by_name_and_by_contract_tensor() -> None:
    ref = _reference()
    by_name = [rec("a", 0.3, features={"f0": [1.5], "f1": 2.0}, slice_="us")]
    tensor = [rec("b", 0.4, features={"features": [[3.0, 4.0]]}, slice_="de")]
    none = [rec("c", 0.5)]  # features not logged: left out of input drift
    cols, pred, slices = feature_columns(by_name + tensor + none, ref, "probability")
    assert cols["f0"].tolist() == [1.5, 3.0] and cols["f1"].tolist() == [2.0, 4.0]
    assert pred is not None and pred.tolist() == [0.3, 0.4]
    assert slices.tolist() == ["us", "de"]
    # No request logged features: only the prediction is compared, over every request.
    cols, pred, slices = feature_columns(none + none, ref, "probability")
    assert cols == {} and pred is not None and pred.tolist() == [0.5, 0.5]


def test_drift_from_log_equals_the_fast_path_on_the_same_arrays() -> None:
    ref = _reference()
    rng = np.random.default_rng(2)
    n = 2000
    x = rng.normal(size=(n, 2))
    x[:, 0] += 0.7
    p = rng.uniform(size=n)
    sl = np.where(rng.uniform(size=n) < 0.3, "br", "us")
    records = [
        rec(f"r{i}", float(p[i]), features={"features": [x[i].tolist()]}, slice_=str(sl[i]))
        for i in range(n)
    ]
    thr = DriftThresholds()
    got = drift_from_log(records, ref, thr, score_output="probability")
    want = drift_report(
        ref, {"f0": x[:, 0], "f1": x[:, 1]}, drift_policy(thr), prediction=p, slices=sl
    )
    assert got == want
    assert got.drifted == ["f0"] and PREDICTION in got.features
