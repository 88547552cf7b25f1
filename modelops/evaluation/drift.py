"""Input and prediction drift: the fast path sensors use, per feature and per slice.

Reference. At registration each feature (and the prediction) gets a binned reference from
the training snapshot: numeric features are cut at the reference's own quantiles (equal-mass
bins, so every bin carries evidence), categorical features keep their support (the most
frequent values, the rest pooled in one "other" bin), and missing values get a bin of their
own (a surge of nulls is drift too). The reference is a pydantic model with a content hash,
stored beside the version.

Current data is binned on the reference's edges and compared with PSI, Jensen-Shannon
distance and, for numeric features, the two-sample KS test on the binned data
(divergence.py). A feature drifts when PSI or the JS distance crosses the policy's threshold.
Those are effect sizes: at 100k rows the KS p-value flags shifts too small to matter, so it
is reported, not voted. PSI >= 0.2 is the conventional "significant shift" (Siddiqi 2006,
"Credit Risk Scorecards"; Yurdakul & Naranjo 2020); JS distance >= 0.1 is the cut the human
view's (Evidently's) default uses.

Drift alerts and never rolls back: distributional drift is often legitimate (a season, a
campaign), and enforcing it would roll back healthy models all the time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelops.evaluation.divergence import js_distance, ks_binned, psi

__all__ = [
    "DRIFT_NOTE",
    "PREDICTION",
    "FeatureReference",
    "DriftReference",
    "DriftPolicy",
    "FeatureDrift",
    "DriftReport",
    "build_reference",
    "drift_report",
]

PREDICTION = "__prediction__"
OTHER = "__other__"
DRIFT_NOTE = (
    "drift alerts and never rolls back: a shifted input distribution is often legitimate, "
    "so the owners of every dependent model are told and decide"
)


class FeatureReference(BaseModel):
    """One feature's reference histogram. Bins: numeric, one per interval between `edges`
    (value v goes to the number of edges <= v); categorical, one per value in `categories`
    then one for everything else; in both, a last bin for missing values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: Literal["numeric", "categorical"]
    edges: list[float] = Field(default_factory=list)
    categories: list[str] = Field(default_factory=list)
    counts: list[int]
    n: int

    @property
    def n_bins(self) -> int:
        return len(self.counts)

    def bin(self, values: Any) -> np.ndarray:
        """Bin index per value, on this reference's bins."""
        v = np.asarray(values)
        missing_bin = self.n_bins - 1
        if self.kind == "numeric":
            x = v.astype(float, copy=False)
            idx = np.searchsorted(np.asarray(self.edges, dtype=float), x, side="right")
            return np.where(np.isnan(x), missing_bin, idx)
        missing = _missing(v)
        text = v if v.dtype.kind in "US" else np.where(missing, "", v).astype(str)
        # One vectorised comparison per category (at most max_categories): no sort.
        codes = np.full(text.shape, len(self.categories), dtype=np.int64)
        for i, c in enumerate(self.categories):
            codes[text == c] = i
        codes[missing] = missing_bin
        return codes


class DriftReference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["modelops.drift-reference/1"] = "modelops.drift-reference/1"
    bins: int
    features: dict[str, FeatureReference]

    def content_hash(self) -> str:
        """sha256 of the canonical JSON: what the registry stores beside the version."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class DriftPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    psi_threshold: float = Field(default=0.2, gt=0)
    js_threshold: float = Field(default=0.1, gt=0, le=1, description="JS distance, base 2")
    min_rows: int = Field(default=500, ge=1, description="fewer rows: not judged")


class FeatureDrift(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feature: str
    kind: Literal["numeric", "categorical"]
    n: int
    psi: float | None
    js_distance: float | None
    ks_statistic: float | None = None
    ks_p_value: float | None = None
    judged: bool
    drifted: bool


class DriftReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference_hash: str
    features: dict[str, FeatureDrift]
    drifted: list[str] = Field(description="features (and the prediction) that drifted")
    slices: dict[str, dict[str, FeatureDrift]] = Field(default_factory=dict)
    drifted_by_slice: dict[str, list[str]] = Field(default_factory=dict)
    note: str = DRIFT_NOTE


def _missing(v: np.ndarray) -> np.ndarray:
    if v.dtype.kind == "f":
        return np.isnan(v)
    if v.dtype.kind == "O":
        return np.array([x is None or (isinstance(x, float) and x != x) for x in v], dtype=bool)
    return np.zeros(v.shape, dtype=bool)


def _reference_for(
    name: str, values: Any, kind: str, bins: int, max_categories: int
) -> FeatureReference:
    v = np.asarray(values)
    if kind == "numeric":
        x = v.astype(float, copy=False)
        finite = x[~np.isnan(x)]
        if finite.size:
            qs = np.quantile(finite, np.arange(1, bins) / bins)
            edges = [float(e) for e in np.unique(qs)]
        else:
            edges = []
        ref = FeatureReference(
            name=name, kind="numeric", edges=edges, counts=[0] * (len(edges) + 2), n=0
        )
    else:
        missing = _missing(v)
        uniq, cnt = np.unique(v[~missing].astype(str), return_counts=True)
        order = np.argsort(-cnt, kind="stable")[:max_categories]
        cats = [str(uniq[i]) for i in order]
        ref = FeatureReference(
            name=name, kind="categorical", categories=cats, counts=[0] * (len(cats) + 2), n=0
        )
    counts = np.bincount(ref.bin(v), minlength=ref.n_bins)
    return ref.model_copy(update={"counts": [int(c) for c in counts], "n": int(v.shape[0])})


def build_reference(
    columns: Mapping[str, Any],
    *,
    prediction: Any = None,
    bins: int = 10,
    categorical: Iterable[str] = (),
    max_categories: int = 50,
) -> DriftReference:
    """The reference from a training snapshot: one array per feature (same length), plus the
    model's predictions on it. Non-numeric arrays and names in `categorical` are categorical."""
    if bins < 2:
        raise ValueError("bins must be at least 2")
    cats = set(categorical)
    feats: dict[str, FeatureReference] = {}
    items = list(columns.items()) + ([(PREDICTION, prediction)] if prediction is not None else [])
    for name, values in items:
        arr = np.asarray(values)
        kind = "categorical" if name in cats or arr.dtype.kind not in "fiub" else "numeric"
        feats[name] = _reference_for(name, arr, kind, bins, max_categories)
    return DriftReference(bins=bins, features=feats)


def _judge(
    ref: FeatureReference, cur: np.ndarray, policy: DriftPolicy
) -> list[FeatureDrift]:
    """cur: current counts, shape (units, bins); one FeatureDrift per unit."""
    r = np.asarray(ref.counts, dtype=float)
    n = cur.sum(axis=1)
    p = psi(r, cur)
    js = js_distance(r, cur)
    ks_d = ks_p = None
    if ref.kind == "numeric":
        ks_d, ks_p = ks_binned(r[:-1], cur[:, :-1])
    out = []
    for i in range(cur.shape[0]):
        judged = bool(n[i] >= policy.min_rows)
        pi, ji = float(p[i]), float(js[i])
        out.append(
            FeatureDrift(
                feature=ref.name,
                kind=ref.kind,
                n=int(n[i]),
                psi=pi if n[i] else None,
                js_distance=ji if n[i] and np.isfinite(ji) else None,
                ks_statistic=None if ks_d is None or not n[i] else float(ks_d[i]),
                ks_p_value=None if ks_p is None or not n[i] else float(ks_p[i]),
                judged=judged,
                drifted=judged and (pi >= policy.psi_threshold or ji >= policy.js_threshold),
            )
        )
    return out


def drift_report(
    reference: DriftReference,
    current: Mapping[str, Any],
    policy: DriftPolicy | None = None,
    *,
    prediction: Any = None,
    slices: Any = None,
) -> DriftReport:
    """Drift of `current` (one array per feature, same length) against the reference, over
    all rows and, with `slices` (a label per row), per slice against the same reference."""
    pol = policy or DriftPolicy()
    cols = dict(current)
    if prediction is not None:
        cols[PREDICTION] = prediction
    unknown = sorted(set(cols) - set(reference.features))
    if unknown:
        known = sorted(reference.features)
        raise ValueError(f"no reference for {unknown}; the reference has {known}")
    codes, names = None, []
    if slices is not None:
        uniq, codes = np.unique(np.asarray(slices), return_inverse=True)
        codes = codes.reshape(-1)
        names = [str(u) for u in uniq]
    features: dict[str, FeatureDrift] = {}
    per_slice: dict[str, dict[str, FeatureDrift]] = {s: {} for s in names}
    for name, values in cols.items():
        ref = reference.features[name]
        b = ref.bin(values)
        nb = ref.n_bins
        total = np.bincount(b, minlength=nb).reshape(1, nb)
        features[name] = _judge(ref, total, pol)[0]
        if codes is not None:
            s = len(names)
            h = np.bincount(codes * nb + b, minlength=s * nb).reshape(s, nb)
            for sname, fd in zip(names, _judge(ref, h, pol), strict=True):
                per_slice[sname][name] = fd
    return DriftReport(
        reference_hash=reference.content_hash(),
        features=features,
        drifted=[k for k, v in features.items() if v.drifted],
        slices=per_slice,
        drifted_by_slice={s: [k for k, v in d.items() if v.drifted] for s, d in per_slice.items()},
    )
