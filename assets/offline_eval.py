"""Offline evaluation on the eval set: overall and per data slice (country).

The numbers land in the version record (eval_metrics, eval_slice_metrics), where the gates
of the next candidate compare against them, so the names are stable: auc, log_loss,
click_rate (observed), predicted_rate (mean prediction), rows.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LOWER_IS_BETTER", "binary_metrics", "evaluate", "higher_is_better"]

LOWER_IS_BETTER = frozenset({"log_loss"})
_EPS = 1e-7


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Rank AUC with ties averaged; None when a slice has only one class (undefined)."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Metrics of one slice; auc is left out where it is undefined, never NaN."""
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    p = np.clip(np.asarray(p, dtype=np.float64).reshape(-1), _EPS, 1 - _EPS)
    out = {
        "rows": float(len(y)),
        "click_rate": float(y.mean()) if len(y) else 0.0,
        "predicted_rate": float(p.mean()) if len(p) else 0.0,
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))) if len(y) else 0.0,
    }
    auc = _auc(y, p)
    if auc is not None and math.isfinite(auc):
        out["auc"] = auc
    return out


def evaluate(
    y: np.ndarray, p: np.ndarray, slices: np.ndarray
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(overall metrics, {slice: metrics}) for predictions p of labels y."""
    y = np.asarray(y).reshape(-1)
    p = np.asarray(p).reshape(-1)
    slices = np.asarray(slices).astype(str).reshape(-1)
    overall = binary_metrics(y, p)
    per_slice = {
        s: binary_metrics(y[slices == s], p[slices == s]) for s in sorted(set(slices.tolist()))
    }
    return overall, per_slice
