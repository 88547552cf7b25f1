"""Builders and assertions shared by the registry test modules (this module holds no tests).

Everything here goes through the public Registry API, so the builders themselves are
exercised on both backends by every test that uses them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from modelops.contracts import Feature, FeatureContract
from modelops.errors import NotFoundError
from modelops.identity import SigningKey, generate_signing_key
from modelops.registry import Registry
from modelops.spec import (
    DecisionPolicy,
    Framework,
    ModelClass,
    ModelSpec,
    ModelVersion,
    RollbackClass,
    State,
    Tier,
    VersionMeta,
)

OWNER_TEAM = "ranking"
TEAMS = (OWNER_TEAM, "safety")


def spec(
    model_id: str = "ranker",
    *,
    tier: Tier | str = Tier.L1,
    rollback_class: RollbackClass | str = RollbackClass.STATELESS,
    slices: list[str] | None = None,
    downstream: list[str] | None = None,
    owner_team: str = OWNER_TEAM,
) -> ModelSpec:
    return ModelSpec(
        model_id=model_id,
        owner_team=owner_team,
        tier=Tier(tier),
        rollback_class=RollbackClass(rollback_class),
        model_class=ModelClass.dnn,
        framework=Framework.pytorch,
        slices=slices or ["global"],
        policy=DecisionPolicy(primary_metric="auc"),
        downstream_dependents=downstream or [],
        description=f"{model_id}: a test model",
        intended_purpose="ranks test items; not for decisions about people",
    )


def weights_hash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def contract(name: str = "ranker.features", version: int = 1, *features: str) -> FeatureContract:
    names = features or ("clicks_7d", "country")
    return FeatureContract(
        name=name, version=version, features=[Feature(name=f, dtype="int64") for f in names]
    )


def datasets(reg: Registry, train: str = "clicks", evals: str = "clicks-eval") -> None:
    """Hashed, as the technical documentation needs; a dataset a test registered already
    (without a hash, say) is left as it is."""
    for name, kind in ((train, "dataset"), (evals, "eval_set")):
        try:
            reg.get_dataset(name, 1)
        except NotFoundError:
            reg.register_dataset(
                name, 1, f"s3://data/{name}/1", kind=kind, content_hash=weights_hash(name)
            )


def teams(reg: Registry) -> None:
    """The known teams the builders use (adding a known team again is a no-op)."""
    for team in TEAMS:
        reg.add_team(team)


def new_model(reg: Registry, model_id: str = "ranker", **kw: Any) -> ModelSpec:
    """Create the model (and its team and the datasets its versions pin, if missing)."""
    teams(reg)
    datasets(reg)
    return reg.create_model(spec(model_id, **kw))


def version(
    reg: Registry,
    model_id: str = "ranker",
    label: str | None = None,
    *,
    passed: bool | None = True,
    contract_ref: str | None = None,
    train: str = "clicks@1",
    evals: str = "clicks-eval@1",
    parent: int | None = None,
    meta: VersionMeta | None = None,
) -> ModelVersion:
    """Register a version; by default also record a passing gate (-> OFFLINE_PASSED)."""
    label = label or f"{model_id}-{len(reg.list_versions(model_id)) + 1}"
    v = reg.register_version(
        model_id,
        weights_hash=weights_hash(label),
        weights_uri=f"file:///weights/{label}.pt",
        training_run_id=f"run-{label}",
        training_data=train,
        eval_set=evals,
        feature_contract_ref=contract_ref,
        parent=parent,
        meta=meta,
    )
    if passed is not None:
        reg.record_gate_result(model_id, v.version, passed=passed, results={"auc": 0.9})
    return v


def bootstrap_prod(reg: Registry, model_id: str = "ranker", **kw: Any) -> int:
    """A first version promoted straight from OFFLINE_PASSED (tiers L0/L1 need no approval)."""
    v = version(reg, model_id, **kw).version
    reg.transition(model_id, v, State.PROMOTED, actor="ops", expected=State.OFFLINE_PASSED)
    return v


def refused(
    reg: Registry, error: type[BaseException], call: Callable[[], Any], match: str | None = None
) -> pytest.ExceptionInfo[Any]:
    """Run a call that must be refused with `error`, and prove it left no row behind."""
    before = reg.row_counts()
    with pytest.raises(error, match=match) as info:
        call()
    after = reg.row_counts()
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    return info


def audit_actions(reg: Registry, model_id: str | None) -> list[str]:
    return [e.action for e in reg.audit_entries(model_id)]


# Two people in the owning team, two outside it, and an operator who makes the moves.
PEOPLE = {
    "rank-lead": OWNER_TEAM,
    "rank-eng": OWNER_TEAM,
    "ops": OWNER_TEAM,
    "safety-lead": "safety",
    "safety-eng": "safety",
}


_KEYS: dict[str, SigningKey] = {}


def key_of(name: str) -> SigningKey:
    """Each test actor's private key (one per name and test session; names in one spelling)."""
    name = name.strip().lower()
    if name not in _KEYS:
        _KEYS[name] = generate_signing_key()
    return _KEYS[name]


def enroll_keys(reg: Registry, *names: str) -> None:
    """Register the test keys of actors that already exist (approvals must be signed)."""
    for name in names:
        reg.add_key(name, key_of(name).public_key)


def add_people(reg: Registry) -> None:
    teams(reg)
    for name, team in PEOPLE.items():
        reg.enroll_actor(name, team, public_key=key_of(name).public_key)


def approve(reg: Registry, model_id: str, v: int, actor: str, **kw: Any) -> Any:
    """A signed approval by `actor`, with its test key."""
    return reg.approve(model_id, v, actor=actor, key=key_of(actor), **kw)


def approve_l3(
    reg: Registry, model_id: str, v: int, target: State | None = None, **kw: Any
) -> None:
    """The two approvals an L3 move needs: one inside the owning team, one outside it."""
    approve(reg, model_id, v, "rank-lead", target=target, **kw)
    approve(reg, model_id, v, "safety-lead", target=target, **kw)
