"""The evaluation maths: what the sensors may conclude from live traffic.

Pure numpy/scipy: no Dagster, no database, no clock, so every statistic is tested in
milliseconds against an independent implementation and every decision rule by seeded
simulation of its error rates. The sensors gather the evidence (per-arm sufficient
statistics, joined prediction pairs, current feature values), call these functions and
launch runs; the benchmark drives the very same engines.

- ratio: per-user ratio metrics and their delta-method variance
- sequential: the always-valid two-boundary SPRT both engines use
- canary: the harm test with per-slice Bonferroni (CanaryEngine)
- ab: the A/B decision (ABEngine) and sample-size planning (plan_ab)
- srm: the sample-ratio-mismatch check
- shadow: the shadow divergence engine
- drift: binned references and the drift fast path
- simulate: seeded per-user traffic for testing the rules
- llm_canary: an LLM canary's prompt lengths against prod's (GuardrailRule holds on a mismatch)
- sequential_rule: SequentialRule, the sensors' default DecisionEngine over those engines
"""

from modelops.evaluation.ab import (
    ABBatch,
    ABDecision,
    ABEngine,
    ABOutcome,
    ABPlan,
    ABPolicy,
    GuardrailEvidence,
    plan_ab,
)
from modelops.evaluation.canary import (
    CanaryAction,
    CanaryBatch,
    CanaryDecision,
    CanaryEngine,
    CanaryPolicy,
)
from modelops.evaluation.drift import (
    DriftPolicy,
    DriftReference,
    DriftReport,
    FeatureDrift,
    FeatureReference,
    build_reference,
    drift_report,
)
from modelops.evaluation.ratio import (
    ArmArrays,
    ArmStats,
    as_arrays,
    log_ratio_difference,
    per_user_log_variance,
    ratio_and_variance,
    users_for_information,
)
from modelops.evaluation.sequential import (
    SequentialDesign,
    SequentialReport,
    SequentialState,
    confidence_sequence,
)
from modelops.evaluation.shadow import (
    SHADOW_CAVEAT,
    ShadowPolicy,
    ShadowReport,
    SliceDivergence,
    expected_calibration_error,
    join_on_request_id,
    shadow_divergence,
)
from modelops.evaluation.srm import SRMPolicy, SRMResult, srm_check

__all__ = [
    "ABBatch",
    "ABDecision",
    "ABEngine",
    "ABOutcome",
    "ABPlan",
    "ABPolicy",
    "ArmArrays",
    "ArmStats",
    "CanaryAction",
    "CanaryBatch",
    "CanaryDecision",
    "CanaryEngine",
    "CanaryPolicy",
    "DriftPolicy",
    "DriftReference",
    "DriftReport",
    "FeatureDrift",
    "FeatureReference",
    "GuardrailEvidence",
    "SHADOW_CAVEAT",
    "SRMPolicy",
    "SRMResult",
    "SequentialDesign",
    "SequentialReport",
    "SequentialState",
    "ShadowPolicy",
    "ShadowReport",
    "SliceDivergence",
    "as_arrays",
    "build_reference",
    "confidence_sequence",
    "drift_report",
    "expected_calibration_error",
    "join_on_request_id",
    "log_ratio_difference",
    "per_user_log_variance",
    "plan_ab",
    "ratio_and_variance",
    "shadow_divergence",
    "srm_check",
    "users_for_information",
]
