"""Gated spec changes: `model amend` changes a model's tier, rollback class, slices, policy
or dependents, and nothing else, signed and audited with its reason.

A tier change or a rollback-class change is dangerous either way (a looser tier skips
gates; a class that promises a restoration it cannot make breaks invariant 5), so either
needs the approvals of the stricter of the two tiers, signed over the new spec's sha256 at
the model's spec epoch (its count of amendments) by actors other than the requester. The
stricter tier's rule: L3 two approvers, one outside the owning team; below L3 one. A change
of slices (adding only), policy or dependents needs the requester's signature and reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, func, insert, select, update

from modelops.desired import DesiredState
from modelops.errors import ApprovalRequired, SpecError
from modelops.identity import (
    Expected,
    SelfApproval,
    SignedKind,
    SignedStatement,
    SigningKey,
)
from modelops.spec import ModelSpec, State, Tier
from modelops.store import db
from modelops.store.tables import (
    dependencies,
    model_slices,
    models,
    slice_states,
    spec_amendments,
    state_changes,
)

from .signatures import SignatureOps, StatementInput, statement_json, unsigned

__all__ = ["AmendOps", "AmendResult", "AMENDABLE", "spec_sha256"]

AMENDABLE = (
    "tier",
    "rollback_class",
    "slices",
    "policy",
    "downstream_dependents",
    "description",  # documentation records (modelops.compliance): filled in after creation
    "intended_purpose",
)
_GATED = ("tier", "rollback_class")
_TIER_ORDER = {Tier.L0: 0, Tier.L1: 1, Tier.L2: 2, Tier.L3: 3}
# A version's state on a slice added later: where its offline gates left it.
_GATE_OUTCOME = {
    State.REGISTERED: State.REGISTERED,
    State.FAILED: State.FAILED,
    State.ARCHIVED: State.ARCHIVED,
}


class AmendResult(BaseModel):
    model_id: str
    epoch: int
    changed: list[str]
    from_sha256: str
    to_sha256: str
    approvers: list[str]
    audit_id: int


def spec_sha256(spec: ModelSpec) -> str:
    """What an amendment signature covers: the new spec, byte for byte as it is stored."""
    return hashlib.sha256(spec.model_dump_json().encode("utf-8")).hexdigest()


def _stricter(a: Tier, b: Tier) -> Tier:
    return a if _TIER_ORDER[a] >= _TIER_ORDER[b] else b


def amendment_rule(old: ModelSpec, new: ModelSpec) -> tuple[int, bool, Tier]:
    """(approvals needed, whether one must be outside the owning team, the tier that rules)."""
    if old.tier == new.tier and old.rollback_class == new.rollback_class:
        return 0, False, new.tier
    tier = _stricter(old.tier, new.tier)
    return (2, True, tier) if tier is Tier.L3 else (1, False, tier)


class AmendOps(SignatureOps):
    def amendment_epoch(self, model_id: str) -> int:
        """The model's spec epoch: how many amendments it has had (what signatures bind to)."""
        with db.read_tx(self.engine) as conn:
            self._spec(conn, model_id)
            return _epoch(conn, model_id)

    def sign_amendment(
        self, spec: ModelSpec, key: SigningKey, *, signer: str, reason: str
    ) -> SignedStatement:
        """A requester's or an approver's signature over this exact new spec, now."""
        return self.sign_as(
            key,
            kind=SignedKind.spec_amendment,
            signer=signer,
            epoch=self.amendment_epoch(spec.model_id),
            model=spec.model_id,
            spec_sha256=spec_sha256(spec),
            reason=reason,
        )

    def amend_model(
        self,
        spec: ModelSpec,
        *,
        statement: StatementInput | None = None,
        approvals: Sequence[StatementInput] = (),
        key: SigningKey | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> AmendResult:
        """Replace a model's spec by a gated, signed amendment; refused whole otherwise."""
        if statement is None and key is not None:
            if actor is None or not (reason or "").strip():
                raise SpecError(
                    "an amendment needs the requester (--actor) and a reason (--reason)"
                )
            statement = self.sign_amendment(spec, key, signer=actor, reason=str(reason))
        what = f"amendment of {spec.model_id}"
        if statement is None:
            raise unsigned(what)
        stmt = SignedStatement.from_obj(statement)
        requester = self._require_actor(stmt.payload.signer)
        signed = [SignedStatement.from_obj(a) for a in approvals]
        # The spec row first, then every slice in order: the order version registration
        # (spec row, then rows that reference the slices) and transitions (one slice) take.
        with self._write(requester, model_id=spec.model_id, lock="model") as op:
            conn = op.conn
            old = op.model
            for s in sorted(old.slices):
                self._lock_slice(conn, spec.model_id, s)
            op.team()
            epoch = _epoch(conn, spec.model_id)
            sha = spec_sha256(spec)
            expect = Expected(kind=SignedKind.spec_amendment, model=spec.model_id, spec_sha256=sha)
            self._verify_signed(op, stmt, what=what, expect=expect, epoch=epoch, claimed=actor)
            changed = [f for f in ModelSpec.model_fields if getattr(old, f) != getattr(spec, f)]
            if not changed:
                raise SpecError(f"{what}: the spec is unchanged; nothing to amend")
            fixed = [f for f in changed if f not in AMENDABLE]
            if fixed:
                raise SpecError(
                    f"{what}: {', '.join(fixed)} cannot be amended; allowed: "
                    f"{', '.join(AMENDABLE)} (a new model id for the rest)"
                )
            dropped = sorted(set(old.slices) - set(spec.slices))
            if dropped:
                raise SpecError(
                    f"{what}: slices {', '.join(dropped)} would be removed; allowed: adding "
                    "slices (a slice with history stays; archive its versions instead)"
                )
            reason = stmt.payload.reason
            needed, cross, ruling = amendment_rule(old, spec)
            approvers: dict[str, str] = {}
            for a in signed:
                signer = a.payload.signer
                if signer == requester:
                    raise SelfApproval(
                        f"{requester!r} requested the {what} and signed an approval of it; "
                        "an approval must come from someone else"
                    )
                self._verify_signed(
                    op, a, what=f"approval of the {what}", expect=expect, epoch=epoch
                )
                approvers[signer] = self._actor_team(conn, signer)
            if needed:
                _check_approvals(
                    what, old, spec, ruling, needed, cross, approvers, self._known_teams(conn)
                )
            added = self._apply(op, old, spec)
            from_sha = spec_sha256(old)
            conn.execute(
                insert(spec_amendments).values(
                    model_id=spec.model_id,
                    epoch=epoch,
                    from_sha256=from_sha,
                    to_sha256=sha,
                    actor=requester,
                    reason=reason,
                    statement=statement_json(stmt),
                    approvals_json=json.dumps([a.to_dict() for a in signed], sort_keys=True),
                    ts=op.ts.isoformat(),
                )
            )
            audit_id = op.audit(
                "amend_model",
                {
                    "spec": json.loads(spec.model_dump_json()),
                    "changed": changed,
                    "epoch": epoch,
                    "from_sha256": from_sha,
                    "to_sha256": sha,
                    "reason": reason,
                    "statement": stmt.to_dict(),
                    "approvals": [a.to_dict() for a in signed],
                    "added_slices": added,
                },
            )
            return AmendResult(
                model_id=spec.model_id,
                epoch=epoch + 1,
                changed=changed,
                from_sha256=from_sha,
                to_sha256=sha,
                approvers=sorted(approvers),
                audit_id=audit_id,
            )

    def _apply(self, op: Any, old: ModelSpec, new: ModelSpec) -> dict[str, dict[str, str]]:
        """Write the new spec, its added slices (each version where its gates left it) and its
        dependents edges; returns the added slices' states for the audit entry."""
        conn, ts, model_id = op.conn, op.ts.isoformat(), new.model_id
        conn.execute(
            update(models)
            .where(models.c.model_id == model_id)
            .values(
                tier=new.tier.value,
                rollback_class=new.rollback_class.value,
                spec_json=new.model_dump_json(),
            )
        )
        added: dict[str, dict[str, str]] = {}
        first = old.slices[0]
        versions = conn.execute(
            select(slice_states.c.version, slice_states.c.state).where(
                slice_states.c.model_id == model_id, slice_states.c.slice == first
            )
        ).all()
        for s in [s for s in new.slices if s not in old.slices]:
            empty = DesiredState(model_id=model_id, slice=s, generation=0)
            conn.execute(
                insert(model_slices).values(
                    model_id=model_id,
                    slice=s,
                    generation=0,
                    desired_json=empty.model_dump_json(),
                    updated_at=ts,
                )
            )
            states = {
                v.version: _GATE_OUTCOME.get(State(v.state), State.OFFLINE_PASSED) for v in versions
            }
            for v, st in sorted(states.items()):
                conn.execute(
                    insert(slice_states).values(
                        model_id=model_id,
                        version=v,
                        slice=s,
                        state=st.value,
                        percent=None,
                        params_json="{}",
                        epoch=0,
                        updated_at=ts,
                    )
                )
                conn.execute(
                    insert(state_changes).values(
                        model_id=model_id,
                        version=v,
                        slice=s,
                        from_state=None,
                        state=st.value,
                        percent=None,
                        ts=ts,
                        actor=op.actor,
                        reason="slice added by amendment",
                        gate_results_json="{}",
                    )
                )
            added[s] = {str(v): st.value for v, st in sorted(states.items())}
        gone = set(old.downstream_dependents) - set(new.downstream_dependents)
        if gone:
            conn.execute(
                delete(dependencies).where(
                    dependencies.c.upstream_model == model_id,
                    dependencies.c.upstream_version == 0,
                    dependencies.c.downstream_model.in_(sorted(gone)),
                )
            )
        self._add_edges(conn, model_id, 0, new.downstream_dependents, op.ts)
        self._spec_cache.pop(model_id, None)
        return added


def _epoch(conn: Any, model_id: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(spec_amendments)
            .where(spec_amendments.c.model_id == model_id)
        ).scalar_one()
    )


def _check_approvals(
    what: str,
    old: ModelSpec,
    new: ModelSpec,
    ruling: Tier,
    needed: int,
    cross: bool,
    approvers: dict[str, str],
    known: set[str],
) -> None:
    outside = [a for a, t in approvers.items() if t in known and t != old.owner_team]
    if len(approvers) >= needed and (not cross or outside):
        return
    moves = []
    if old.tier != new.tier:
        moves.append(f"tier {old.tier.value} -> {new.tier.value}")
    if old.rollback_class != new.rollback_class:
        moves.append(f"rollback class {old.rollback_class.value} -> {new.rollback_class.value}")
    rule = (
        f"{needed} signed approval{'s' if needed > 1 else ''} from actors other than the requester"
    )
    if cross:
        rule += f", at least one outside team {old.owner_team!r}"
    have = ", ".join(f"{a} ({t})" for a, t in sorted(approvers.items())) or "none"
    raise ApprovalRequired(
        f"the {what} ({'; '.join(moves)}) needs the stricter tier {ruling.value}'s approvals: "
        f"{rule}; have: {have}; approvers sign with `modelops model sign-amendment SPEC.yaml`"
    )
