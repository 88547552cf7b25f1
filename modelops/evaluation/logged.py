"""From logged predictions to the engines' arrays: the wiring the shadow and drift sensors, the
shadow replay schedule and the report assets share, so all of them judge the same numbers.

The prediction log keeps one record per (request, arm): prod's answer under the request id,
and the shadow's answer (live mirror, or a replay of the logged request) under the same id
with arm "shadow". Records are read duck-typed (`request_id`, `slice`, `latency_ms`, `error`,
`outputs`, `features`), so the core needs no serving import. Scores come from one output
tensor (the policy's `score_output`, else the first): one value per request is a 1-D score,
several are class probabilities (top-1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from modelops.evaluation.drift import PREDICTION, DriftPolicy, DriftReference, DriftReport
from modelops.evaluation.drift import drift_report as _drift_report
from modelops.evaluation.shadow import (
    ShadowPolicy,
    ShadowReport,
    join_on_request_id,
    shadow_divergence,
)
from modelops.spec import DriftThresholds, ShadowThresholds

__all__ = [
    "LoggedPairs",
    "drift_policy",
    "drift_from_log",
    "feature_columns",
    "load_reference",
    "pair_records",
    "save_reference",
    "score_of",
    "shadow_from_log",
    "shadow_policy",
]

_SENSOR_ONLY = {"score_output"}


def shadow_policy(thresholds: ShadowThresholds) -> ShadowPolicy:
    """The engine's policy from the registered spec's thresholds."""
    return ShadowPolicy.model_validate(thresholds.model_dump(exclude=_SENSOR_ONLY))


def drift_policy(thresholds: DriftThresholds) -> DriftPolicy:
    return DriftPolicy.model_validate(thresholds.model_dump(exclude={"window_s"}))


def score_of(outputs: Mapping[str, Any] | None, name: str | None = None) -> Any:
    """The score in one logged response: a float, a list of class probabilities, or None
    when the response has no such output (an error, or an unlogged body)."""
    if not outputs:
        return None
    tensors = outputs.get("outputs")
    if not isinstance(tensors, list) or not tensors:
        return None
    t = tensors[0] if name is None else next((t for t in tensors if t.get("name") == name), None)
    if not isinstance(t, dict):
        return None
    data = np.asarray(t.get("data"), dtype=float).reshape(-1)
    if data.size == 0:
        return None
    return float(data[0]) if data.size == 1 else data.tolist()


def _latest_by_id(records: Iterable[Any]) -> dict[str, Any]:
    """One record per request id (a client may reuse x-request-id): the last logged wins."""
    out: dict[str, Any] = {}
    for r in records:
        out[str(r.request_id)] = r
    return out


@dataclass(frozen=True)
class LoggedPairs:
    """Prod and shadow answers to the same requests, row i of each array one request."""

    request_ids: np.ndarray
    prod: np.ndarray
    shadow: np.ndarray
    slices: np.ndarray
    prod_latency_ms: np.ndarray
    shadow_latency_ms: np.ndarray
    prod_error: np.ndarray
    shadow_error: np.ndarray

    def __len__(self) -> int:
        return int(self.request_ids.shape[0])


def _scores(records: Sequence[Any], name: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, failed): a request with an error or no readable score counts as failed."""
    raw = [None if r.error is not None else score_of(r.outputs, name) for r in records]
    widths = {len(s) for s in raw if isinstance(s, list)}
    failed = np.array([s is None for s in raw], dtype=bool)
    if not widths:
        vals = np.array([np.nan if s is None or isinstance(s, list) else s for s in raw], float)
        return vals, failed | np.isnan(vals)
    k = max(widths)
    out = np.full((len(raw), k), np.nan)
    for i, s in enumerate(raw):
        if isinstance(s, list) and len(s) == k:
            out[i] = s
    return out, failed | np.isnan(out).any(axis=1)


def pair_records(
    prod_records: Iterable[Any], shadow_records: Iterable[Any], score_output: str | None = None
) -> LoggedPairs:
    """Join prod and shadow records on request id (`shadow.join_on_request_id`)."""
    prod, shadow = _latest_by_id(prod_records), _latest_by_id(shadow_records)
    pid = np.array(list(prod), dtype=str)
    sid = np.array(list(shadow), dtype=str)
    ip, is_ = join_on_request_id(pid, sid) if len(pid) and len(sid) else (np.array([], int),) * 2
    p_recs = list(prod.values())
    s_recs = list(shadow.values())
    pr = [p_recs[i] for i in ip]
    sr = [s_recs[i] for i in is_]
    ps, pf = _scores(pr, score_output)
    ss, sf = _scores(sr, score_output)
    if ps.ndim != ss.ndim or (ps.ndim == 2 and ps.shape[1] != ss.shape[1]):
        # Different output shapes cannot be compared pair by pair: every pair is a failure
        # of the shadow (it does not answer in prod's terms).
        ss = np.full_like(ps, np.nan)
        sf = np.ones(len(sr), dtype=bool)
    return LoggedPairs(
        request_ids=pid[ip],
        prod=ps,
        shadow=ss,
        slices=np.array([r.slice for r in pr], dtype=str),
        prod_latency_ms=np.array([r.latency_ms for r in pr], dtype=float),
        shadow_latency_ms=np.array([r.latency_ms for r in sr], dtype=float),
        prod_error=pf,
        shadow_error=sf,
    )


def shadow_from_log(
    prod_records: Iterable[Any],
    shadow_records: Iterable[Any],
    thresholds: ShadowThresholds,
    *,
    labels: Mapping[str, float] | None = None,
) -> ShadowReport:
    """The shadow divergence report over logged pairs, under the model's registered policy.

    `labels`: observed outcomes by request id, for calibration (pairs without one are left
    out of the ECE only if none has one; otherwise calibration is not computed)."""
    pairs = pair_records(prod_records, shadow_records, thresholds.score_output)
    y = None
    if labels is not None and len(pairs):
        got = [labels.get(str(r)) for r in pairs.request_ids]
        if all(v is not None for v in got):
            y = np.asarray(got, dtype=float)
    slices = pairs.slices if len(pairs) else None
    return shadow_divergence(
        pairs.prod if len(pairs) else np.zeros(0),
        pairs.shadow if len(pairs) else np.zeros(0),
        shadow_policy(thresholds),
        labels=y,
        slices=slices,
        prod_latency_ms=pairs.prod_latency_ms if len(pairs) else None,
        shadow_latency_ms=pairs.shadow_latency_ms if len(pairs) else None,
        prod_error=pairs.prod_error,
        shadow_error=pairs.shadow_error,
    )


def _row_values(features: Mapping[str, Any], names: Sequence[str]) -> list[Any] | None:
    """One request's feature values in `names` order: by name when logged by name, else
    from the one input tensor whose width is the number of features (contract order)."""
    if all(n in features for n in names):
        vals = []
        for n in names:
            v = features[n]
            while isinstance(v, list) and len(v) == 1:
                v = v[0]
            vals.append(v)
        return vals
    for v in features.values():
        flat = np.asarray(v, dtype=object).reshape(-1)
        if flat.size == len(names):
            return flat.tolist()
    return None


def feature_columns(
    records: Sequence[Any], reference: DriftReference, score_output: str | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
    """(columns, prediction, slices) of the logged requests, on the reference's features.

    Only requests that logged their features count for input drift; when none did (a model
    whose policy does not log inputs), only the prediction is compared."""
    names = [n for n in reference.features if n != PREDICTION]
    rows: list[list[Any]] = []
    kept: list[Any] = []
    for r in records:
        vals = _row_values(r.features, names) if r.features and names else None
        if vals is not None:
            rows.append(vals)
            kept.append(r)
    use = kept if rows else list(records)
    columns: dict[str, np.ndarray] = {}
    for j, n in enumerate(names if rows else []):
        col = [row[j] for row in rows]
        if reference.features[n].kind == "numeric":
            columns[n] = np.array([np.nan if v is None else v for v in col], dtype=float)
        else:
            columns[n] = np.array([None if v is None else str(v) for v in col], dtype=object)
    prediction = None
    if PREDICTION in reference.features:
        scores, failed = _scores(use, score_output)
        if scores.ndim == 1:
            prediction = scores  # NaN (a failed request) falls in the missing bin
    slices = np.array([r.slice for r in use], dtype=str)
    return columns, prediction, slices


def drift_from_log(
    records: Sequence[Any],
    reference: DriftReference,
    thresholds: DriftThresholds,
    *,
    score_output: str | None = None,
) -> DriftReport:
    """Drift of the logged window against the version's reference, overall and per slice."""
    columns, prediction, slices = feature_columns(records, reference, score_output)
    return _drift_report(
        reference, columns, drift_policy(thresholds), prediction=prediction, slices=slices
    )


def save_reference(store: Any, reference: DriftReference) -> tuple[str, str]:
    """Store the reference content-addressed beside the weights: (uri, sha256). The blob's
    address is `reference.content_hash()`, since it is the same canonical JSON."""
    ref = store.put_bytes(reference.model_dump_json().encode())
    assert ref.sha256 == reference.content_hash()
    return ref.uri, ref.sha256


def load_reference(store: Any, sha256: str) -> DriftReference:
    """Read a stored reference; the store verifies the bytes against their hash first."""
    return DriftReference.model_validate_json(store.read_bytes(sha256))
