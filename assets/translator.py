"""How a fleet declaration becomes asset specs: keys, descriptions, tags, metadata and checks.

Every choice sits in one small public method, so a platform that wants another key prefix, its
own groups or extra metadata subclasses `ModelopsFleetTranslator` and overrides that one method,
instead of copying the factories (`assets.fleet_defs`), which only wire specs to asset bodies.
The translator does no I/O: it reads the validated declaration and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from assets.gates import GATE_NAMES
from modelops.fleet import DatasetDecl, Fleet, ModelDecl
from modelops.spec import ModelClass, RollbackClass

__all__ = ["IRREVERSIBLE_WARNING", "FeatureUse", "ModelopsFleetTranslator", "feature_uses"]

IRREVERSIBLE_WARNING = (
    "This model cannot be cleanly rolled back. Promotion is an approximately one-way decision."
)


@dataclass(frozen=True)
class FeatureUse:
    """One feature as the fleet uses it: its dtype and the contracts that name it."""

    name: str
    dtype: str
    contracts: tuple[str, ...]


def feature_uses(fleet: Fleet) -> list[FeatureUse]:
    """Every feature named by any contract of the fleet, once, sorted by name."""
    owners: dict[str, list[str]] = {}
    dtypes: dict[str, str] = {}
    for c in fleet.feature_contracts:
        for f in c.features:
            owners.setdefault(f.name, []).append(c.ref)
            dtypes.setdefault(f.name, str(f.dtype.value if hasattr(f.dtype, "value") else f.dtype))
    return [FeatureUse(name, dtypes[name], tuple(refs)) for name, refs in sorted(owners.items())]


class ModelopsFleetTranslator:
    """The default mapping from a fleet declaration to Dagster asset specs."""

    # ------------------------------------------------------------------ datasets and eval sets

    def get_dataset_key(self, decl: DatasetDecl) -> dg.AssetKey:
        return dg.AssetKey(["eval_sets" if decl.kind == "eval_set" else "datasets", decl.name])

    def get_dataset_group_name(self, decl: DatasetDecl) -> str:
        return "datasets"

    def get_dataset_description(self, decl: DatasetDecl) -> str:
        return decl.description or f"{decl.kind} {decl.name} (snapshots v1, v2, ...)"

    def get_dataset_tags(self, decl: DatasetDecl) -> dict[str, str]:
        return {"modelops/kind": decl.kind}

    def get_dataset_spec(self, decl: DatasetDecl) -> dg.AssetSpec:
        """The observable source asset's fields (its data is produced outside Dagster)."""
        return dg.AssetSpec(
            self.get_dataset_key(decl),
            group_name=self.get_dataset_group_name(decl),
            description=self.get_dataset_description(decl),
            tags=self.get_dataset_tags(decl),
        )

    # ------------------------------------------------------------------ features

    def get_feature_key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey(["features", name])

    def get_feature_description(self, feature: FeatureUse) -> str:
        return (
            f"feature {feature.name} ({feature.dtype}), in contracts {', '.join(feature.contracts)}"
        )

    def get_feature_metadata(self, feature: FeatureUse) -> dict[str, Any]:
        return {"dtype": feature.dtype, "contracts": ", ".join(feature.contracts)}

    def get_feature_spec(self, feature: FeatureUse) -> dg.AssetSpec:
        return dg.AssetSpec(
            self.get_feature_key(feature.name),
            group_name="features",
            description=self.get_feature_description(feature),
            metadata=self.get_feature_metadata(feature),
            kinds={"feature"},
        )

    # ------------------------------------------------------------------ models

    def get_model_key(self, decl: ModelDecl) -> dg.AssetKey:
        """The refresh jobs (`jobs.refresh`) select ["models", id] and ["eval_reports", id]
        by key: a translator that moves these keys builds its own refresh jobs."""
        return dg.AssetKey(["models", decl.model_id])

    def get_model_deps(self, fleet: Fleet, decl: ModelDecl) -> list[dg.AssetKey]:
        """Training data and eval set, then every feature of the model's contract."""
        deps = [
            self.get_dataset_key(fleet.dataset(decl.dataset)),
            self.get_dataset_key(fleet.dataset(decl.eval_set)),
        ]
        if decl.feature_contract:
            contract = fleet.contract(decl.feature_contract)
            deps.extend(self.get_feature_key(f.name) for f in contract.features)
        return deps

    def get_model_description(self, decl: ModelDecl) -> str:
        """Tier and rollback class up front; an IRREVERSIBLE model says so in plain words."""
        spec = decl.spec
        parts = [spec.description.strip()] if spec.description.strip() else []
        parts.append(
            f"Tier {spec.tier.value}, rollback class {spec.rollback_class.value}, "
            f"owner {spec.owner_team}. Trained by {decl.trainer} on {decl.dataset}, "
            f"evaluated on {decl.eval_set}."
        )
        if spec.rollback_class is RollbackClass.IRREVERSIBLE:
            parts.append(IRREVERSIBLE_WARNING)
        return "\n\n".join(parts)

    def get_model_group_name(self, decl: ModelDecl) -> str:
        return "models"

    def get_model_tags(self, decl: ModelDecl) -> dict[str, str]:
        spec = decl.spec
        return {
            "modelops/tier": spec.tier.value,
            "modelops/rollback_class": spec.rollback_class.value,
            "modelops/framework": spec.framework.value,
        }

    def get_model_kinds(self, decl: ModelDecl) -> set[str]:
        spec = decl.spec
        if spec.model_class is ModelClass.dnn:
            return {spec.framework.value, "triton"}
        return {spec.framework.value}

    def get_model_owners(self, decl: ModelDecl) -> list[str]:
        return [f"team:{decl.spec.owner_team}"]

    def get_model_metadata(self, decl: ModelDecl) -> dict[str, Any]:
        spec = decl.spec
        return {
            "tier": spec.tier.value,
            "rollback_class": spec.rollback_class.value,
            "trainer": decl.trainer,
        }

    def get_model_spec(self, fleet: Fleet, decl: ModelDecl) -> dg.AssetSpec:
        return dg.AssetSpec(
            self.get_model_key(decl),
            deps=self.get_model_deps(fleet, decl),
            group_name=self.get_model_group_name(decl),
            description=self.get_model_description(decl),
            tags=self.get_model_tags(decl),
            kinds=self.get_model_kinds(decl),
            owners=self.get_model_owners(decl),
            metadata=self.get_model_metadata(decl),
        )

    def get_gate_descriptions(self, decl: ModelDecl) -> Mapping[str, str]:
        """What each offline gate checks, in this model's own thresholds."""
        g, spec = decl.gates, decl.spec
        return {
            "gate_no_regression": f"{g.metric} drops at most {g.max_regression} "
            "against the promoted version",
            "gate_no_slice_regression": f"no slice's {g.metric} drops more than "
            f"{g.max_slice_regression} against the promoted version",
            "gate_fairness": f"{g.metric} spread across protected slices "
            f"{spec.policy.protected_slices} at most {g.fairness_max_gap}",
            "gate_latency_memory_slo": f"p99 <= {g.latency_p99_ms} ms and memory <= "
            f"{g.memory_mb} MB, measured in the real Triton",
        }

    def get_model_check_specs(self, fleet: Fleet, decl: ModelDecl) -> list[dg.AssetCheckSpec]:
        """The offline gates, as blocking checks: a failed gate stops everything downstream."""
        key = self.get_model_key(decl)
        docs = self.get_gate_descriptions(decl)
        return [
            dg.AssetCheckSpec(name, asset=key, blocking=True, description=docs[name])
            for name in GATE_NAMES
        ]

    # ------------------------------------------------------------------ eval reports

    def get_report_key(self, decl: ModelDecl) -> dg.AssetKey:
        return dg.AssetKey(["eval_reports", decl.model_id])

    def get_report_spec(self, fleet: Fleet, decl: ModelDecl) -> dg.AssetSpec:
        return dg.AssetSpec(
            self.get_report_key(decl),
            deps=[
                self.get_model_key(decl),
                self.get_dataset_key(fleet.dataset(decl.eval_set)),
            ],
            group_name="eval_reports",
            description=f"Candidate vs prod per slice and the offline gates of {decl.model_id}.",
            kinds={"markdown"},
            owners=[f"team:{decl.spec.owner_team}"],
            tags={"modelops/tier": decl.spec.tier.value},
        )
