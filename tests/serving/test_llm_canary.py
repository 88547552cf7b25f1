"""The LLM canary's prompt-length check: a canary that saw only short contexts must not pass."""

from __future__ import annotations

import numpy as np
import pytest

from modelops.errors import SpecError
from serving.llm_canary import (
    PromptLengthPolicy,
    PromptLengthVerdict,
    compare_prompt_lengths,
    compare_prompt_lengths_from_records,
)
from serving.records import PredictionRecord


def prod_like(n: int, seed: int) -> np.ndarray:
    """Long-tailed prompt lengths in tokens: median ~400, p95 ~2000, capped at 8k context."""
    rng = np.random.default_rng(seed)
    return np.minimum(np.ceil(rng.lognormal(mean=6.0, sigma=1.0, size=n)), 8192).astype(int)


def test_a_canary_sampled_only_on_short_contexts_is_a_mismatch() -> None:
    prod = prod_like(5000, seed=1)
    canary = np.random.default_rng(2).integers(5, 120, size=800)  # all short prompts
    report = compare_prompt_lengths(canary, prod)
    assert report.verdict is PromptLengthVerdict.MISMATCH
    assert report.statistic is not None and report.statistic > 0.5
    assert report.p_value is not None and report.p_value < 1e-10
    assert report.tail_share_observed == 0.0
    assert report.canary_p95 is not None and report.prod_p95 is not None
    assert report.canary_p95 < report.prod_p95 / 10
    assert any("under-samples long contexts" in r for r in report.reasons)
    assert (report.n_canary, report.n_prod) == (800, 5000)


def test_a_canary_missing_only_the_long_tail_is_a_mismatch() -> None:
    """Same traffic, but the top 5% (about 2k tokens and up) never reached the canary. The bulk
    matches, so the whole-distribution test alone does not count it; the tail test does."""
    prod = prod_like(5000, seed=3)
    pool = prod_like(20000, seed=4)
    canary = pool[pool < np.quantile(pool, 0.95)][:600]
    report = compare_prompt_lengths(canary, prod)
    assert report.verdict is PromptLengthVerdict.MISMATCH
    assert report.statistic is not None and report.statistic < 0.1
    assert report.tail_share_observed is not None and report.tail_share_observed < 0.01
    assert report.tail_p_value is not None and report.tail_p_value < 1e-6
    assert len(report.reasons) == 1 and "under-samples long contexts" in report.reasons[0]


def test_the_same_distribution_is_ok() -> None:
    report = compare_prompt_lengths(prod_like(1500, seed=5), prod_like(5000, seed=6))
    assert report.verdict is PromptLengthVerdict.OK, report.reasons
    assert report.p_value is not None and report.p_value > 0.01
    assert report.tail_share_observed is not None and report.tail_share_observed > 0.03
    assert report.reasons == []


@pytest.mark.parametrize("n_canary, n_prod", [(0, 5000), (12, 5000), (5000, 30)])
def test_too_few_samples_is_inconclusive_not_ok(n_canary: int, n_prod: int) -> None:
    # Even a canary that is all short: with 12 prompts nothing can be concluded either way.
    canary = np.full(n_canary, 10)
    report = compare_prompt_lengths(canary, prod_like(n_prod, seed=7))
    assert report.verdict is PromptLengthVerdict.INCONCLUSIVE
    assert "too few" in report.reasons[0] or "no prompts" in report.reasons[0]


def test_huge_samples_need_a_relevant_difference_not_just_significance() -> None:
    """With 200k prompts a 3% shift is 'significant'; it must not block a rollout."""
    prod = prod_like(200_000, seed=8)
    canary = np.ceil(prod_like(200_000, seed=9) * 1.03).astype(int)
    report = compare_prompt_lengths(canary, prod)
    assert report.p_value is not None and report.p_value < 0.005
    assert report.verdict is PromptLengthVerdict.OK
    strict = compare_prompt_lengths(canary, prod, PromptLengthPolicy(min_ks_statistic=0.0))
    assert strict.verdict is PromptLengthVerdict.MISMATCH


def test_from_prediction_log_records_splits_by_version_and_skips_shadow() -> None:
    prod = prod_like(600, seed=10)
    short = np.random.default_rng(11).integers(5, 60, size=300)

    def rec(i: int, version: int, arm: str, tokens: int | None) -> PredictionRecord:
        return PredictionRecord(
            request_id=f"r{version}-{arm}-{i}",
            ts=0.0,
            model_id="chat",
            version=version,
            arm=arm,
            slice="global",
            latency_ms=1.0,
            prompt_tokens=tokens,
        )

    records = [rec(i, 1, "prod", int(t)) for i, t in enumerate(prod)]
    records += [rec(i, 2, "canary", int(t)) for i, t in enumerate(short)]
    # Shadow copies of long prod prompts must not make the canary look representative.
    records += [rec(i, 2, "shadow", int(t)) for i, t in enumerate(prod)]
    records += [rec(i, 2, "canary", None) for i in range(5)]
    report = compare_prompt_lengths_from_records(records, canary_version=2, prod_version=1)
    assert (report.n_canary, report.n_prod) == (300, 600)
    assert report.verdict is PromptLengthVerdict.MISMATCH


def test_lengths_must_be_token_counts() -> None:
    with pytest.raises(SpecError):
        compare_prompt_lengths([10, -1], [10, 20])
    with pytest.raises(SpecError):
        compare_prompt_lengths([10, float("nan")], [10, 20])
