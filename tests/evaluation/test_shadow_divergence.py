"""The shadow divergence engine: each statistic against scipy/scikit-learn, per-slice results
against slicing by hand, and the verdicts a policy gives."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from modelops.evaluation import (
    SHADOW_CAVEAT,
    ShadowPolicy,
    expected_calibration_error,
    join_on_request_id,
    shadow_divergence,
)
from modelops.evaluation.divergence import js_distance, kl_divergence, smoothed


@pytest.fixture(scope="module")
def pairs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(61)
    n = 50_000
    prod = rng.beta(2, 8, size=n)
    return {
        "prod": prod,
        "same": np.clip(prod + rng.normal(0, 0.005, n), 0, 1),
        "labels": (rng.random(n) < prod).astype(int),
        "slices": rng.integers(0, 3, size=n),
        "lat": rng.gamma(4, 2.5, size=n),
    }


def test_kl_and_js_are_scipy_on_the_same_histograms() -> None:
    rng = np.random.default_rng(62)
    p, q = rng.integers(0, 50, size=(4, 20)), rng.integers(0, 50, size=(4, 20))
    q[:, 3] = 0  # an empty bin: smoothing keeps KL finite
    for i in range(4):
        ps, qs = smoothed(p[i]), smoothed(q[i])
        assert kl_divergence(p[i], q[i]) == pytest.approx(rel_entr(ps, qs).sum(), rel=1e-12)
        assert js_distance(p[i], q[i]) == pytest.approx(jensenshannon(p[i], q[i], base=2),
                                                        rel=1e-9)
    np.testing.assert_allclose(js_distance(p, q), [jensenshannon(a, b, base=2)
                                                   for a, b in zip(p, q, strict=True)])
    assert js_distance([1, 0], [0, 1]) == pytest.approx(1.0)


def test_ece_matches_scikit_learn_calibration_curve() -> None:
    """ECE from scikit-learn's reliability diagram: its per-bin observed and predicted means,
    weighted by the bin counts on the same uniform bins."""
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(63)
    s = rng.random(20_000)
    y = (rng.random(20_000) < s**1.5).astype(int)  # over-confident at the top
    true, pred = calibration_curve(y, s, n_bins=15, strategy="uniform")
    counts = np.histogram(s, bins=np.linspace(0, 1, 16))[0]
    ref = np.sum(counts[counts > 0] / s.size * np.abs(true - pred))
    assert expected_calibration_error(s, y, 15) == pytest.approx(ref, rel=1e-6)
    # Top-1 confidence for class probabilities.
    probs = np.column_stack([s, 1 - s])
    hit = (probs.argmax(axis=1) == y).astype(float)
    conf = probs.max(axis=1)
    t2, p2 = calibration_curve(hit, conf, n_bins=15, strategy="uniform")
    c2 = np.histogram(conf, bins=np.linspace(0, 1, 16))[0]
    ref2 = np.sum(c2[c2 > 0] / s.size * np.abs(t2 - p2))
    assert expected_calibration_error(probs, y, 15) == pytest.approx(ref2, rel=1e-6)


def test_identical_models_pass_with_the_caveat(pairs: dict) -> None:
    r = shadow_divergence(pairs["prod"], pairs["same"], labels=pairs["labels"],
                          prod_latency_ms=pairs["lat"], shadow_latency_ms=pairs["lat"] * 1.05)
    assert r.verdict == "pass" and r.passed
    assert r.agreement > 0.99 and r.kl_prod_shadow < 0.01
    assert r.caveat == SHADOW_CAVEAT
    assert "not a predictor of closed-loop metrics" in r.caveat


def test_miscalibrated_shadow_fails_with_reasons(pairs: dict) -> None:
    """Scores inflated 1.6x: the same ranking, but the score distribution and calibration
    move; the report names each breach."""
    shadow = np.clip(pairs["prod"] * 1.6, 0, 1)
    r = shadow_divergence(pairs["prod"], shadow, labels=pairs["labels"])
    assert r.verdict == "fail" and not r.passed
    text = " | ".join(r.reasons)
    assert "KL(prod || shadow)" in text and "calibration: shadow ECE" in text
    assert r.ece_shadow > r.ece_prod


def test_agreement_is_at_the_policy_threshold(pairs: dict) -> None:
    p = pairs["prod"]
    shadow = np.where(p > 0.25, p - 0.1, p)  # moves scores across 0.3, not across 0.5
    strict = ShadowPolicy(threshold=0.3, max_kl=10, max_js_distance=1, max_slice_js_distance=1)
    loose = strict.model_copy(update={"threshold": 0.5})
    a3 = shadow_divergence(p, shadow, strict).agreement
    a5 = shadow_divergence(p, shadow, loose).agreement
    assert a5 == pytest.approx(1 - np.mean((p >= 0.5) != (shadow >= 0.5)))
    assert a3 == pytest.approx(1 - np.mean((p >= 0.3) != (shadow >= 0.3)))
    assert a3 < a5


def test_per_slice_divergence_equals_slicing_by_hand(pairs: dict) -> None:
    """Slice 2 gets a shifted shadow; per-slice numbers equal a report on that slice alone,
    and only slice 2 is named."""
    p, sl = pairs["prod"], pairs["slices"]
    shadow = np.where(sl == 2, np.clip(p + 0.15, 0, 1), pairs["same"])
    names = ["eu", "us", "apac"]
    r = shadow_divergence(p, shadow, slices=sl, slice_names=names)
    for code, name in enumerate(names):
        alone = shadow_divergence(p[sl == code], shadow[sl == code])
        assert r.slices[name].n_pairs == alone.n_pairs
        assert r.slices[name].agreement == pytest.approx(alone.agreement, rel=1e-12)
        assert r.slices[name].kl_prod_shadow == pytest.approx(alone.kl_prod_shadow, rel=1e-9)
        assert r.slices[name].js_distance == pytest.approx(alone.js_distance, rel=1e-9)
    named = [x for x in r.reasons if x.startswith("slice ")]
    assert len(named) == 1 and named[0].startswith("slice apac")
    # String labels work the same way.
    r2 = shadow_divergence(p, shadow, slices=np.array(names)[sl])
    assert r2.slices["apac"].js_distance == pytest.approx(r.slices["apac"].js_distance)


def test_latency_and_error_deltas(pairs: dict) -> None:
    p, lat = pairs["prod"], pairs["lat"]
    err_p = np.zeros(p.size, bool)
    err_s = np.zeros(p.size, bool)
    err_s[: p.size // 20] = True  # 5% of the shadow's requests failed
    r = shadow_divergence(p, pairs["same"], prod_latency_ms=lat, shadow_latency_ms=lat * 2,
                          prod_error=err_p, shadow_error=err_s)
    assert r.latency_p99_ms == pytest.approx((np.percentile(lat, 99), np.percentile(lat * 2, 99)))
    assert r.error_rate == pytest.approx((0.0, 0.05))
    assert r.n_pairs == p.size - p.size // 20  # failed pairs leave the score comparison
    text = " | ".join(r.reasons)
    assert "p99 latency" in text and "error rate 5.00%" in text


def test_classifier_top1(pairs: dict) -> None:
    rng = np.random.default_rng(64)
    prod = rng.dirichlet([1, 1, 1], size=10_000)
    flip = prod[:, ::-1]
    r = shadow_divergence(prod, prod)
    assert r.agreement == 1.0 and r.passed
    bad = shadow_divergence(prod, flip)
    assert bad.agreement == pytest.approx(np.mean(prod.argmax(1) == flip.argmax(1)))
    assert "top-1 agreement" in bad.reasons[0]


def test_few_pairs_are_inconclusive() -> None:
    r = shadow_divergence(np.full(10, 0.2), np.full(10, 0.9))
    assert r.verdict == "inconclusive" and not r.passed
    assert "10 comparable pairs of the 1000 needed" in r.reasons[0]


def test_join_on_request_id() -> None:
    prod_ids = np.array([5, 3, 9, 1])
    shadow_ids = np.array([9, 7, 5])
    ip, is_ = join_on_request_id(prod_ids, shadow_ids)
    assert list(prod_ids[ip]) == list(shadow_ids[is_]) == [5, 9]


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="same shape"):
        shadow_divergence(np.zeros(5), np.zeros(4))
