"""The LLM canary check: did the canary see the prompts prod sees?

An LLM canary is only evidence about the traffic it was given. Long prompts are where
context limits, KV-cache pressure and latency bite, so a canary that happened to receive only
short contexts can look perfect and still fail on promotion. This check compares the canary's
prompt-length distribution with prod's before its metrics are believed:

- a two-sample Kolmogorov-Smirnov test on the whole distribution, and
- a tail test: the share of canary prompts longer than prod's p95 should be about 5%; a
  one-sided binomial test asks whether it is significantly less.

Too few samples is INCONCLUSIVE, never OK: absence of evidence must hold the rollout, not pass
it. Each test needs both significance and a practically relevant effect, so huge samples do
not flag differences nobody cares about.

Methods: the two-sample Kolmogorov-Smirnov test (Massey 1951, JASA 46:68-78;
`scipy.stats.ks_2samp`, exact or asymptotic by size) and the exact one-sided binomial test
(`scipy.stats.binomtest`), Bonferroni-split at alpha/2 each. Its decision: `GuardrailRule`
holds an LLM canary whose windows (read with their prompt lengths) are not OK here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from modelops.errors import SpecError
from modelops.evidence import WindowStats

__all__ = [
    "PromptLengthVerdict",
    "PromptLengthPolicy",
    "PromptLengthReport",
    "PromptRecord",
    "compare_prompt_lengths",
    "compare_prompt_lengths_from_records",
    "compare_window_prompt_lengths",
]


class PromptRecord(Protocol):
    """What the check reads of a prediction-log record (the serving plane's PredictionRecord)."""

    version: int
    arm: str
    prompt_tokens: int | None


class PromptLengthVerdict(StrEnum):
    OK = "OK"
    MISMATCH = "MISMATCH"
    INCONCLUSIVE = "INCONCLUSIVE"


class PromptLengthPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(
        default=0.01, gt=0, lt=1, description="family-wise; each of the two tests gets alpha/2"
    )
    min_samples: int = Field(
        default=100,
        ge=2,
        description="per side; about the fewest canary prompts for which missing every prompt "
        "above prod's p95 is significant at alpha/2",
    )
    min_ks_statistic: float = Field(
        default=0.1, ge=0, le=1, description="smallest KS distance that counts as a mismatch"
    )
    tail_quantile: float = Field(default=0.95, gt=0.5, lt=1)
    min_tail_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="the canary's share above prod's tail quantile, relative to the expected "
        "share, below which a significant shortfall counts as a mismatch",
    )


class PromptLengthReport(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: PromptLengthVerdict
    n_canary: int
    n_prod: int
    statistic: float | None = Field(default=None, description="two-sample KS distance D")
    p_value: float | None = Field(default=None, description="KS p-value")
    canary_p95: float | None = None
    prod_p95: float | None = None
    tail_share_expected: float | None = Field(
        default=None, description="share of canary prompts expected above prod's tail quantile"
    )
    tail_share_observed: float | None = None
    tail_p_value: float | None = None
    reasons: list[str] = Field(default_factory=list)
    policy: PromptLengthPolicy


def compare_prompt_lengths(
    canary: Sequence[int] | Sequence[float] | np.ndarray,
    prod: Sequence[int] | Sequence[float] | np.ndarray,
    policy: PromptLengthPolicy | None = None,
) -> PromptLengthReport:
    """Compare prompt lengths (tokens) of canary traffic against prod traffic."""
    from scipy import stats

    policy = policy or PromptLengthPolicy()
    c = _lengths(canary, "canary")
    p = _lengths(prod, "prod")
    q = policy.tail_quantile
    base = {"n_canary": int(c.size), "n_prod": int(p.size), "policy": policy}
    if c.size == 0 or p.size == 0:
        return PromptLengthReport(
            verdict=PromptLengthVerdict.INCONCLUSIVE,
            reasons=[f"no prompts to compare (canary {c.size}, prod {p.size})"],
            **base,
        )

    ks = stats.ks_2samp(c, p)
    d, ks_p = float(ks.statistic), float(ks.pvalue)
    prod_tail = float(np.quantile(p, q))
    # Ties matter for token counts: the expected share is prod's own share strictly above.
    expected = float(np.mean(p > prod_tail))
    above = int(np.sum(c > prod_tail))
    observed = above / c.size
    tail_p = (
        float(stats.binomtest(above, c.size, expected, alternative="less").pvalue)
        if 0 < expected < 1
        else 1.0
    )
    report = {
        **base,
        "statistic": d,
        "p_value": ks_p,
        "canary_p95": float(np.quantile(c, q)),
        "prod_p95": prod_tail,
        "tail_share_expected": expected,
        "tail_share_observed": observed,
        "tail_p_value": tail_p,
    }

    if c.size < policy.min_samples or p.size < policy.min_samples:
        return PromptLengthReport(
            verdict=PromptLengthVerdict.INCONCLUSIVE,
            reasons=[
                f"too few prompts to judge: canary {c.size}, prod {p.size}, "
                f"need {policy.min_samples} each"
            ],
            **report,
        )

    reasons = []
    half = policy.alpha / 2
    if ks_p < half and d >= policy.min_ks_statistic:
        direction = "shorter" if np.median(c) < np.median(p) else "longer"
        reasons.append(
            f"prompt lengths differ (KS D={d:.3f}, p={ks_p:.2g}); canary median "
            f"{np.median(c):g} vs prod {np.median(p):g} tokens: canary prompts are {direction}"
        )
    if tail_p < half and observed < policy.min_tail_ratio * expected:
        reasons.append(
            f"canary under-samples long contexts: {observed:.1%} of its prompts exceed prod's "
            f"p{q * 100:g} of {prod_tail:g} tokens, {expected:.1%} expected (p={tail_p:.2g})"
        )
    verdict = PromptLengthVerdict.MISMATCH if reasons else PromptLengthVerdict.OK
    return PromptLengthReport(verdict=verdict, reasons=reasons, **report)


def compare_prompt_lengths_from_records(
    records: Iterable[PromptRecord],
    *,
    canary_version: int,
    prod_version: int,
    policy: PromptLengthPolicy | None = None,
) -> PromptLengthReport:
    """The same check over prediction-log records (their `prompt_tokens`), split by version.

    Shadow records are left out: the question is what traffic the canary arm really served.
    """
    canary: list[int] = []
    prod: list[int] = []
    for r in records:
        if r.prompt_tokens is None or r.arm == "shadow":
            continue
        if r.version == canary_version:
            canary.append(r.prompt_tokens)
        elif r.version == prod_version:
            prod.append(r.prompt_tokens)
    return compare_prompt_lengths(canary, prod, policy)


def compare_window_prompt_lengths(
    candidate: WindowStats | None,
    baseline: WindowStats | None,
    policy: PromptLengthPolicy | None = None,
) -> PromptLengthReport | None:
    """The same check on two prediction-log windows read `with_prompt_tokens`; None when
    either carries no prompt lengths (not an LLM, or the lengths were not asked for)."""
    c = candidate.prompt_tokens if candidate is not None else None
    b = baseline.prompt_tokens if baseline is not None else None
    if c is None or b is None or c.values is None or b.values is None:
        return None
    return compare_prompt_lengths(c.values, b.values, policy)


def _lengths(values: Sequence[int] | Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr < 0)):
        raise SpecError(f"{what} prompt lengths must be finite and non-negative token counts")
    return arr
