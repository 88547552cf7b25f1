"""The shadow divergence engine: prod and shadow predictions on the same requests.

Both models scored the same inputs (the live mirror, or a replay of the prediction log), so
their outputs can be compared pair by pair: agreement at the decision threshold (top-1 for a
classifier), KL(prod || shadow) and Jensen-Shannon distance between the binned score
distributions (divergence.py), the same per slice, calibration against the outcomes that
were observed (expected calibration error: Naeini, Cooper & Hauskrecht 2015; Guo, Pleiss,
Sun & Weinberger 2017, equal-width bins), and the latency and error-rate deltas. Thresholds
come from the model's policy; the report says pass, fail or inconclusive, with every reason.

What it cannot say (the counterfactual trap): the outcomes were produced by what prod served.
A shadow's agreement and calibration validate the infrastructure and the model's outputs at
a fixed input; they do not predict closed-loop metrics, which only an A/B measures.

Everything is vectorised over pairs (one pass of bincounts), so a report over a million
pairs takes a fraction of a second (bench/decisions.py measures it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelops.evaluation.divergence import js_distance, kl_divergence

__all__ = [
    "SHADOW_CAVEAT",
    "ShadowPolicy",
    "ShadowReport",
    "SliceDivergence",
    "shadow_divergence",
    "join_on_request_id",
    "expected_calibration_error",
]

SHADOW_CAVEAT = (
    "Shadow is infrastructure and calibration validation, not a predictor of closed-loop "
    "metrics: both models scored the same inputs, but the outcomes are those of what prod "
    "served, so agreement, divergence and calibration here say nothing about how users would "
    "respond to the shadow's outputs; only an A/B test measures that."
)


class ShadowPolicy(BaseModel):
    """A model's shadow thresholds. Scores are probabilities in `score_range` (1-D) or class
    probabilities (2-D, top-1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(default=0.5, description="decision threshold for 1-D scores")
    score_range: tuple[float, float] = (0.0, 1.0)
    bins: int = Field(default=20, ge=2, description="score histogram bins for KL / JS")
    calibration_bins: int = Field(default=15, ge=2)
    min_pairs: int = Field(default=1000, ge=1, description="fewer pairs: inconclusive")
    min_agreement: float = Field(default=0.95, ge=0, le=1)
    max_kl: float = Field(default=0.05, ge=0, description="KL(prod || shadow), nats")
    max_js_distance: float = Field(default=0.1, ge=0, le=1)
    max_slice_js_distance: float = Field(default=0.15, ge=0, le=1)
    min_slice_pairs: int = Field(default=200, ge=1, description="slices below: not judged")
    max_ece_increase: float = Field(default=0.02, ge=0, description="shadow ECE - prod ECE")
    max_latency_p99_ratio: float = Field(default=1.5, ge=1)
    max_error_rate_increase: float = Field(default=0.01, ge=0)

    @model_validator(mode="after")
    def _range(self) -> ShadowPolicy:
        lo, hi = self.score_range
        if not hi > lo:
            raise ValueError("score_range must be (low, high) with high > low")
        return self


class SliceDivergence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_pairs: int
    agreement: float | None
    kl_prod_shadow: float | None
    js_distance: float | None
    judged: bool = Field(description="enough pairs to be held to the thresholds")


class ShadowReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["pass", "fail", "inconclusive"]
    passed: bool
    reasons: list[str]
    n_pairs: int
    agreement: float | None
    kl_prod_shadow: float | None
    js_distance: float | None
    ece_prod: float | None = None
    ece_shadow: float | None = None
    latency_p50_ms: tuple[float, float] | None = Field(default=None, description="(prod, shadow)")
    latency_p99_ms: tuple[float, float] | None = None
    error_rate: tuple[float, float] | None = Field(default=None, description="(prod, shadow)")
    slices: dict[str, SliceDivergence] = Field(default_factory=dict)
    caveat: str = SHADOW_CAVEAT


def join_on_request_id(prod_ids: Any, shadow_ids: Any) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into prod, into shadow) of the request ids both logged, in id order. Integer
    ids (a hash of the request id) join fastest; ids must be unique on each side."""
    _, ip, is_ = np.intersect1d(
        np.asarray(prod_ids), np.asarray(shadow_ids), assume_unique=True, return_indices=True
    )
    return ip, is_


def _bin_1d(s: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    idx = ((s - lo) * (bins / (hi - lo))).astype(np.int64)
    return np.clip(idx, 0, bins - 1)


def expected_calibration_error(
    scores: Any, labels: Any, bins: int = 15
) -> float:
    """ECE = sum_b (n_b / N) |mean(label_b) - mean(confidence_b)| over equal-width bins of
    the confidence (Naeini et al. 2015; Guo et al. 2017). 1-D scores are P(label = 1); 2-D
    scores are class probabilities and the confidence is the top-1 probability, its label
    whether the top-1 class was right."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels)
    if s.ndim == 2:
        conf = s.max(axis=1)
        hit = (s.argmax(axis=1) == y).astype(float)
    else:
        conf, hit = s, y.astype(float)
    if conf.size == 0:
        return float("nan")
    b = _bin_1d(conf, 0.0, 1.0, bins)
    sc = np.bincount(b, weights=conf, minlength=bins)
    sh = np.bincount(b, weights=hit, minlength=bins)
    return float(np.sum(np.abs(sh - sc)) / conf.size)


def shadow_divergence(
    prod_scores: Any,
    shadow_scores: Any,
    policy: ShadowPolicy | None = None,
    *,
    labels: Any = None,
    slices: Any = None,
    slice_names: Sequence[str] | None = None,
    prod_latency_ms: Any = None,
    shadow_latency_ms: Any = None,
    prod_error: Any = None,
    shadow_error: Any = None,
) -> ShadowReport:
    """Compare pairs already joined by request id (row i of each array is one request).

    `slices`: an integer code per pair (0..S-1) named by `slice_names`, or labels of any type.
    `labels`: the observed outcome per pair, for calibration. `*_error`: True where that
    model failed the request; failed pairs are left out of the score comparison.
    """
    pol = policy or ShadowPolicy()
    ps = np.asarray(prod_scores, dtype=float)
    ss = np.asarray(shadow_scores, dtype=float)
    if ps.shape != ss.shape or ps.ndim not in (1, 2):
        raise ValueError("prod and shadow scores must have the same shape, (n,) or (n, classes)")
    n_all = ps.shape[0]
    pe = np.zeros(n_all, bool) if prod_error is None else np.asarray(prod_error, dtype=bool)
    se = np.zeros(n_all, bool) if shadow_error is None else np.asarray(shadow_error, dtype=bool)
    ok = ~(pe | se)
    if ps.ndim == 1:
        ok &= np.isfinite(ps) & np.isfinite(ss)
    else:
        ok &= np.isfinite(ps).all(axis=1) & np.isfinite(ss).all(axis=1)

    if ps.ndim == 1:
        lo, hi = pol.score_range
        nb = pol.bins
        bp, bs = _bin_1d(ps, lo, hi, nb), _bin_1d(ss, lo, hi, nb)
        agree = (ps >= pol.threshold) == (ss >= pol.threshold)
    else:
        nb = ps.shape[1]
        bp, bs = ps.argmax(axis=1), ss.argmax(axis=1)
        agree = bp == bs

    if slices is None:
        codes = np.zeros(n_all, dtype=np.int64)
        names = ["all"]
    else:
        raw = np.asarray(slices)
        if raw.dtype.kind in "iu" and slice_names is not None:
            codes, names = raw.astype(np.int64), list(slice_names)
        else:
            uniq, codes = np.unique(raw, return_inverse=True)
            names = [str(u) for u in uniq]
    n_slices = len(names)
    sel: Any = slice(None) if ok.all() else ok  # a view, not a copy, when nothing failed
    c_ok = codes[sel]
    hp = np.bincount(c_ok * nb + bp[sel], minlength=n_slices * nb).reshape(n_slices, nb)
    hs = np.bincount(c_ok * nb + bs[sel], minlength=n_slices * nb).reshape(n_slices, nb)
    n_slice = hp.sum(axis=1)
    agree_slice = np.bincount(c_ok, weights=agree[sel], minlength=n_slices)

    n = int(ok.sum())
    tp, ts = hp.sum(axis=0), hs.sum(axis=0)
    kl = float(kl_divergence(tp, ts)) if n else None
    js = float(js_distance(tp, ts)) if n else None
    agreement = float(agree_slice.sum() / n) if n else None

    with np.errstate(divide="ignore", invalid="ignore"):
        s_agree = agree_slice / n_slice
    s_kl = kl_divergence(hp, hs)
    s_js = js_distance(hp, hs)
    slice_rep: dict[str, SliceDivergence] = {}
    if slices is not None:
        for i, name in enumerate(names):
            m = int(n_slice[i])
            slice_rep[name] = SliceDivergence(
                n_pairs=m,
                agreement=float(s_agree[i]) if m else None,
                kl_prod_shadow=float(s_kl[i]) if m else None,
                js_distance=float(s_js[i]) if m else None,
                judged=m >= pol.min_slice_pairs,
            )

    ece_p = ece_s = None
    if labels is not None:
        y = np.asarray(labels)[sel]
        ece_p = expected_calibration_error(ps[sel], y, pol.calibration_bins)
        ece_s = expected_calibration_error(ss[sel], y, pol.calibration_bins)

    lat50 = lat99 = None
    if prod_latency_ms is not None and shadow_latency_ms is not None:
        qp = np.percentile(np.asarray(prod_latency_ms, dtype=float), [50, 99])
        qs = np.percentile(np.asarray(shadow_latency_ms, dtype=float), [50, 99])
        lat50, lat99 = (float(qp[0]), float(qs[0])), (float(qp[1]), float(qs[1]))
    err = None
    if n_all and (prod_error is not None or shadow_error is not None):
        err = (float(pe.mean()), float(se.mean()))

    reasons: list[str] = []
    if n < pol.min_pairs:
        return ShadowReport(
            verdict="inconclusive",
            passed=False,
            reasons=[f"inconclusive: {n} comparable pairs of the {pol.min_pairs} needed"],
            n_pairs=n, agreement=agreement, kl_prod_shadow=kl, js_distance=js,
            ece_prod=ece_p, ece_shadow=ece_s, latency_p50_ms=lat50, latency_p99_ms=lat99,
            error_rate=err, slices=slice_rep,
        )
    assert agreement is not None and kl is not None and js is not None
    what = "top-1 agreement" if ps.ndim == 2 else f"agreement at threshold {pol.threshold:g}"
    if agreement < pol.min_agreement:
        reasons.append(f"{what} {agreement:.2%} below {pol.min_agreement:.2%}")
    if kl > pol.max_kl:
        reasons.append(f"KL(prod || shadow) {kl:.4f} nats above {pol.max_kl:g}")
    if js > pol.max_js_distance:
        reasons.append(f"Jensen-Shannon distance {js:.4f} above {pol.max_js_distance:g}")
    for name, sd in slice_rep.items():
        if sd.judged and sd.js_distance is not None and sd.js_distance > pol.max_slice_js_distance:
            reasons.append(
                f"slice {name}: Jensen-Shannon distance {sd.js_distance:.4f} above "
                f"{pol.max_slice_js_distance:g} over {sd.n_pairs} pairs"
            )
    if ece_p is not None and ece_s is not None and ece_s - ece_p > pol.max_ece_increase:
        reasons.append(
            f"calibration: shadow ECE {ece_s:.4f} vs prod {ece_p:.4f}, worse by more than "
            f"{pol.max_ece_increase:g}"
        )
    if lat99 is not None and lat99[0] > 0 and lat99[1] > pol.max_latency_p99_ratio * lat99[0]:
        reasons.append(
            f"p99 latency {lat99[1]:.1f}ms vs prod {lat99[0]:.1f}ms, more than "
            f"{pol.max_latency_p99_ratio:g}x"
        )
    if err is not None and err[1] - err[0] > pol.max_error_rate_increase:
        reasons.append(
            f"error rate {err[1]:.2%} vs prod {err[0]:.2%}, up by more than "
            f"{pol.max_error_rate_increase:.2%}"
        )
    failed = bool(reasons)
    if not failed:
        reasons.append(
            f"{what} {agreement:.2%}, KL {kl:.4f}, JS distance {js:.4f} over {n} pairs: "
            "within the policy"
        )
    return ShadowReport(
        verdict="fail" if failed else "pass",
        passed=not failed,
        reasons=reasons,
        n_pairs=n, agreement=agreement, kl_prod_shadow=kl, js_distance=js,
        ece_prod=ece_p, ece_shadow=ece_s, latency_p50_ms=lat50, latency_p99_ms=lat99,
        error_rate=err, slices=slice_rep,
    )
