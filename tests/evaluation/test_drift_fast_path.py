"""The drift fast path: its statistics against scipy, the serialisable reference, per-slice
drift, and agreement with Evidently's per-feature verdicts on a shared fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from modelops.evaluation import DriftReference, build_reference, drift_report
from modelops.evaluation.divergence import ks_binned, psi, smoothed
from modelops.evaluation.drift import PREDICTION


def fixture(seed: int, rows: int) -> tuple[dict, dict, list[str], set[str]]:
    """Features that clearly drift (a shift of one standard deviation, a doubled spread, a
    category taking half the mass) next to features that clearly do not."""
    rng = np.random.default_rng(seed)
    levels = np.array(list("abcde"))

    def draw(drifted: bool) -> dict[str, np.ndarray]:
        return {
            "age": rng.normal(40, 10, rows),
            "spend": rng.lognormal(3, 0.8, rows),
            "visits": rng.poisson(12, rows).astype(float),
            "price": rng.normal(100 + (20 if drifted else 0), 20, rows),
            "latency": rng.normal(50, 10 * (2 if drifted else 1), rows),
            "country": rng.choice(levels, rows),
            "device": rng.choice(levels, rows, p=[0.6, 0.1, 0.1, 0.1, 0.1] if drifted else None),
        }

    return draw(False), draw(True), ["country", "device"], {"price", "latency", "device"}


def test_reference_is_serialisable_and_content_addressed() -> None:
    ref, _, cats, _ = fixture(71, 5000)
    r = build_reference(ref, prediction=ref["spend"] / 100, categorical=cats)
    back = DriftReference.model_validate_json(r.model_dump_json())
    assert back == r and back.content_hash() == r.content_hash()
    assert len(r.content_hash()) == 64
    age = r.features["age"]
    np.testing.assert_allclose(age.edges, np.quantile(ref["age"], np.arange(1, 10) / 10))
    assert sum(age.counts) == age.n == 5000 and age.counts[-1] == 0  # no missing values
    assert r.features["country"].categories == sorted("abcde", key=lambda c: -np.sum(
        ref["country"] == c))
    assert PREDICTION in r.features
    json.loads(r.model_dump_json())  # plain JSON, storable beside the version


def test_binned_ks_is_scipy_ks_2samp_on_the_bin_indices() -> None:
    ref, cur, cats, _ = fixture(72, 4000)
    r = build_reference(ref, categorical=cats)
    for name in ("age", "price", "visits", "latency"):
        f = r.features[name]
        br, bc = f.bin(ref[name]), f.bin(cur[name])
        rc = np.bincount(br, minlength=f.n_bins)[:-1]
        cc = np.bincount(bc, minlength=f.n_bins)[:-1]
        d, p = ks_binned(rc, cc)
        sc = stats.ks_2samp(br, bc, method="asymp")
        assert float(d) == pytest.approx(sc.statistic, abs=1e-12)
        # Kolmogorov's limit vs scipy's finite-n distribution of the same statistic.
        assert float(p) == pytest.approx(sc.pvalue, rel=0.05, abs=1e-4)


def test_psi_and_js_against_scipy() -> None:
    """PSI is the symmetrised KL, sum (c - r) ln(c / r) = KL(c || r) + KL(r || c)."""
    rng = np.random.default_rng(73)
    r, c = rng.integers(0, 500, 12), rng.integers(0, 500, 12)
    rs, cs = smoothed(r), smoothed(c)
    assert psi(r, c) == pytest.approx(rel_entr(cs, rs).sum() + rel_entr(rs, cs).sum(), rel=1e-12)
    ref, cur, cats, _ = fixture(74, 5000)
    reference = build_reference(ref, categorical=cats)
    rep = drift_report(reference, cur)
    f = reference.features["device"]
    cur_counts = np.bincount(f.bin(cur["device"]), minlength=f.n_bins)
    assert rep.features["device"].js_distance == pytest.approx(
        jensenshannon(f.counts, cur_counts, base=2), rel=1e-9
    )


def test_drift_verdicts_and_never_rollback_note() -> None:
    ref, cur, cats, drifted = fixture(75, 20_000)
    rep = drift_report(build_reference(ref, categorical=cats), cur)
    assert set(rep.drifted) == drifted
    assert "never rolls back" in rep.note
    same = drift_report(build_reference(ref, categorical=cats), fixture(76, 20_000)[0])
    assert same.drifted == []


def test_unseen_categories_and_missing_values_are_their_own_evidence() -> None:
    rng = np.random.default_rng(77)
    ref = {"c": rng.choice(np.array(["a", "b"]), 5000), "x": rng.normal(size=5000)}
    r = build_reference(ref)
    cur_x = rng.normal(size=5000)
    cur_x[:1500] = np.nan
    cur = {"c": np.array(["z"] * 2000 + ["a"] * 3000, dtype=object), "x": cur_x}
    rep = drift_report(r, cur)
    assert rep.features["c"].drifted and rep.features["x"].drifted
    fc = r.features["c"]
    assert fc.bin(np.array(["z", "a", None], dtype=object)).tolist() == [2, fc.categories.index(
        "a"), 3]
    with pytest.raises(ValueError, match="no reference for"):
        drift_report(r, {"unknown": np.zeros(3)})


def test_per_slice_drift_names_the_slice() -> None:
    """Only the eu slice's spend moved; over all rows it is diluted, per slice it is not."""
    rng = np.random.default_rng(78)
    n = 30_000
    ref = {"spend": rng.lognormal(3, 0.8, n)}
    sl = rng.choice(np.array(["eu", "us", "apac"]), n, p=[0.1, 0.6, 0.3])
    cur = rng.lognormal(3, 0.8, n)
    cur[sl == "eu"] *= 2.5
    rep = drift_report(build_reference(ref), {"spend": cur}, slices=sl)
    assert rep.drifted_by_slice == {"apac": [], "eu": ["spend"], "us": []}
    assert rep.slices["eu"]["spend"].n == int(np.sum(sl == "eu"))
    one = drift_report(build_reference(ref), {"spend": cur[sl == "eu"]})
    assert rep.slices["eu"]["spend"].psi == pytest.approx(one.features["spend"].psi, rel=1e-12)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Evidently's web dependencies
def test_agrees_with_evidently_per_feature() -> None:
    """Evidently's DataDriftPreset (its defaults: Wasserstein for numeric, Jensen-Shannon for
    categorical columns past 1,000 rows) and the fast path reach the same verdict on every
    feature of the shared fixture."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref, cur, cats, drifted = fixture(79, 5000)
    nums = [k for k in ref if k not in cats]
    dd = DataDefinition(numerical_columns=nums, categorical_columns=cats)
    snap = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(pd.DataFrame(cur), data_definition=dd),
        reference_data=Dataset.from_pandas(pd.DataFrame(ref), data_definition=dd),
    )
    ev = set()
    seen = set()
    for m in snap.dict()["metrics"]:
        cfg = m.get("config", {})
        if str(cfg.get("type", "")).endswith("ValueDrift"):
            seen.add(cfg["column"])
            method = str(cfg["method"]).lower()
            assert "distance" in method, method  # distances: drift when value >= threshold
            if float(m["value"]) >= float(cfg["threshold"]):
                ev.add(cfg["column"])
    assert seen == set(ref)
    fast = set(drift_report(build_reference(ref, categorical=cats), cur).drifted)
    assert fast == ev == drifted
