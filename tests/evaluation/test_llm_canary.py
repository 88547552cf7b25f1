"""The LLM canary's prompt-length check: a canary that saw only short contexts must not pass."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelops.errors import SpecError
from modelops.evaluation.decision import Evidence, Verdict
from modelops.evaluation.guardrail import GuardrailRule
from modelops.evaluation.llm_canary import (
    PromptLengthPolicy,
    PromptLengthVerdict,
    compare_prompt_lengths,
    compare_prompt_lengths_from_records,
    compare_window_prompt_lengths,
)
from modelops.evidence import OutcomeStats, TokenStats, WindowStats
from modelops.fleet import OnlinePolicy, PolicyDurations
from modelops.spec import DecisionPolicy, State, Tier
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


# ------------------------------------------------------------ against independent arithmetic


def test_statistics_match_an_independent_ks_distance_and_binomial_tail() -> None:
    """D is the largest gap between the two empirical CDFs (computed here from sorted arrays);
    the tail p-value is P(X <= observed) for X ~ Binomial(n, expected), summed term by term."""
    prod = prod_like(3000, seed=21)
    canary = prod_like(400, seed=22)[:400] // 2  # shorter prompts, so both tests have work
    report = compare_prompt_lengths(canary, prod)
    grid = np.union1d(canary, prod)
    ecdf_c = np.searchsorted(np.sort(canary), grid, side="right") / canary.size
    ecdf_p = np.searchsorted(np.sort(prod), grid, side="right") / prod.size
    assert report.statistic == pytest.approx(float(np.max(np.abs(ecdf_c - ecdf_p))), abs=1e-12)
    tail = float(np.quantile(prod, 0.95))
    p = float(np.mean(prod > tail))
    k, n = int(np.sum(canary > tail)), canary.size
    by_hand = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
    assert report.tail_p_value == pytest.approx(by_hand, rel=1e-9)
    assert report.tail_share_expected == pytest.approx(p)


# ------------------------------------------------------------ error rates, by seeded simulation


def _mismatch_rate(make_canary, reps: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        prod = prod_like(2000, seed=int(rng.integers(2**31)))
        canary = make_canary(int(rng.integers(2**31)))
        hits += compare_prompt_lengths(canary, prod).verdict is PromptLengthVerdict.MISMATCH
    return hits / reps


def test_seeded_simulation_false_hold_rate_is_within_alpha() -> None:
    """Canary traffic drawn like prod's: a MISMATCH (a held canary) at most alpha = 1% of the
    time, up to three binomial standard errors of the simulation."""
    reps, alpha = 400, PromptLengthPolicy().alpha
    rate = _mismatch_rate(lambda s: prod_like(300, seed=s), reps, seed=23)
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps), rate


def test_seeded_simulation_power_against_a_canary_without_long_contexts() -> None:
    """Canary traffic with prod's top 5% cut off (300 prompts): caught at least 95% of the time."""

    def cut(seed: int) -> np.ndarray:
        pool = prod_like(2000, seed=seed)
        return pool[pool < np.quantile(pool, 0.95)][:300]

    assert _mismatch_rate(cut, 200, seed=24) >= 0.95


# ------------------------------------------------------------ the decision it feeds

NOW = 1_800_000_000.0


def window(version: int, arm: str, lengths: np.ndarray | None) -> WindowStats:
    tokens = None
    if lengths is not None:
        v = sorted(int(x) for x in lengths)
        tokens = TokenStats(
            count=len(v),
            mean=float(np.mean(v)),
            p50=float(np.median(v)),
            p99=float(np.quantile(v, 0.99)),
            max=v[-1],
            values=v,
        )
    n = 2000 if arm == "prod" else 400
    return WindowStats(
        model_id="chat",
        version=version,
        arm=arm,
        slice="global",
        since_ts=NOW - 3600,
        until_ts=None,
        first_ts=NOW - 3500,
        last_ts=NOW - 1,
        requests=n,
        errors=0,
        error_rate=0.0,
        timeouts=0,
        timeout_rate=0.0,
        latency_mean_ms=50.0,
        latency_p50_ms=40.0,
        latency_p99_ms=90.0,
        latency_max_ms=100.0,
        outcomes={"thumbs_up": OutcomeStats(count=n, mean=0.5)},
        prompt_tokens=tokens,
    )


def llm_canary(canary: np.ndarray | None, prod: np.ndarray | None) -> Evidence:
    return Evidence(
        model_id="chat",
        slice="global",
        version=2,
        state=State.CANARY,
        percent=1,
        since_ts=NOW - 3600,
        now_ts=NOW,
        candidate=window(2, "canary", canary),
        baseline=window(1, "prod", prod),
        policy=DecisionPolicy(primary_metric="thumbs_up", min_samples=100),
        online=OnlinePolicy(min_requests=50, max_latency_p99_ms=1000),
        durations=PolicyDurations(canary_step_s=60),
        tier=Tier.L1,
    )


def test_an_llm_canary_that_missed_long_contexts_holds_and_a_representative_one_steps() -> None:
    prod = prod_like(2000, seed=31)
    short = np.random.default_rng(32).integers(5, 120, size=400)
    held = GuardrailRule().decide(llm_canary(short, prod))
    assert held.verdict is Verdict.HOLD and held.next_action is None
    assert "canary prompts are not prod's" in held.reason
    assert "under-samples long contexts" in held.reason
    ok = GuardrailRule().decide(llm_canary(prod_like(400, seed=33), prod))
    assert ok.verdict is Verdict.ADVANCE and ok.next_percent == 5


def test_too_few_canary_prompts_hold_as_inconclusive() -> None:
    d = GuardrailRule().decide(llm_canary(prod_like(40, seed=34), prod_like(2000, seed=35)))
    assert d.verdict is Verdict.HOLD
    assert d.reason.startswith("inconclusive: prompt lengths: too few prompts")


def test_windows_without_prompt_lengths_skip_the_check() -> None:
    """A model that is not an LLM (its windows carry no prompt lengths) is judged as before."""
    e = llm_canary(None, None)
    assert compare_window_prompt_lengths(e.candidate, e.baseline) is None
    assert GuardrailRule().decide(e).verdict is Verdict.ADVANCE
    plain = window(2, "canary", np.arange(200))
    plain = plain.model_copy(
        update={"prompt_tokens": plain.prompt_tokens.model_copy(update={"values": None})}
    )
    assert compare_window_prompt_lengths(plain, window(1, "prod", np.arange(200))) is None
