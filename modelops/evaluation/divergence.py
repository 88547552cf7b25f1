"""Distances between binned distributions, shared by the shadow engine and drift.

All of them take count histograms along the last axis, so one call scores every slice (or
every feature) at once.
- KL(P || Q) with additive smoothing of half a count per bin (the Krichevsky-Trofimov /
  Jeffreys estimator), because a bin empty in Q would make it infinite; the tests check it
  equals scipy.special.rel_entr summed over the same smoothed distributions.
- Jensen-Shannon distance in bits, sqrt(JS divergence), in [0, 1] and finite with empty bins
  (Lin 1991; Endres & Schindelin 2003 for the square root being a metric); the tests check it
  against scipy.spatial.distance.jensenshannon(p, q, base=2).
- PSI, sum (c - r) ln(c / r) over proportions (the population stability index; Yurdakul &
  Naranjo 2020 for its statistical properties), with the same smoothing as KL.
- Two-sample Kolmogorov-Smirnov on binned data: the largest gap between the two empirical
  CDFs at the bin boundaries, which is exactly scipy.stats.ks_2samp's statistic on the
  samples replaced by their bin index; p-value from Kolmogorov's limiting distribution with
  n_eff = n m / (n + m), conservative on discretised data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["kl_divergence", "js_distance", "psi", "ks_binned", "smoothed"]

_LN2 = float(np.log(2.0))


def smoothed(counts: Any, pseudo: float = 0.5) -> np.ndarray:
    c = np.asarray(counts, dtype=float) + pseudo
    return c / c.sum(axis=-1, keepdims=True)


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, x * np.log(np.where(x > 0, x / y, 1.0)), 0.0)


def kl_divergence(p_counts: Any, q_counts: Any, pseudo: float = 0.5) -> np.ndarray:
    """KL(P || Q) in nats over smoothed bin proportions."""
    p, q = smoothed(p_counts, pseudo), smoothed(q_counts, pseudo)
    return np.sum(p * np.log(p / q), axis=-1)


def js_distance(p_counts: Any, q_counts: Any) -> np.ndarray:
    """Jensen-Shannon distance, base 2; 0 for identical, 1 for disjoint histograms. NaN if
    either histogram is empty."""
    p = np.asarray(p_counts, dtype=float)
    q = np.asarray(q_counts, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p / p.sum(axis=-1, keepdims=True)
        q = q / q.sum(axis=-1, keepdims=True)
    m = 0.5 * (p + q)
    js = 0.5 * (np.sum(_xlogy(p, m), axis=-1) + np.sum(_xlogy(q, m), axis=-1)) / _LN2
    return np.sqrt(np.clip(js, 0.0, 1.0))


def psi(reference_counts: Any, current_counts: Any, pseudo: float = 0.5) -> np.ndarray:
    r, c = smoothed(reference_counts, pseudo), smoothed(current_counts, pseudo)
    return np.sum((c - r) * np.log(c / r), axis=-1)


def ks_binned(reference_counts: Any, current_counts: Any) -> tuple[np.ndarray, np.ndarray]:
    """(statistic, asymptotic p-value) of the two-sample KS test on ordered bins."""
    from scipy.special import kolmogorov

    r = np.asarray(reference_counts, dtype=float)
    c = np.asarray(current_counts, dtype=float)
    n, m = r.sum(axis=-1), c.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cdf_r = np.cumsum(r, axis=-1) / n[..., None]
        cdf_c = np.cumsum(c, axis=-1) / m[..., None]
        d = np.max(np.abs(cdf_r - cdf_c), axis=-1)
        en = n * m / (n + m)
        p = kolmogorov(np.sqrt(en) * d)
    return d, p
