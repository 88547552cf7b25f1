"""The audit log as the registry exposes it: alerts, entries, verification, row counts.

Verification replays each intact chain against the tables it describes, so a row changed
behind the registry's back is named even when every hash still holds.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select, text

from modelops import audit as audit_mod
from modelops.errors import SpecError
from modelops.store import db
from modelops.store.tables import audit_log, models

from .statements import RegistryBase

__all__ = ["AuditOps"]


class AuditOps(RegistryBase):
    def record_alert(
        self,
        model_id: str,
        *,
        kind: str,
        detail: str,
        payload: dict[str, Any] | None = None,
        actor: str = "system:alerts",
    ) -> int:
        """An event the control plane must not lose (a failed rollback run, say), as an
        audit entry on the model's chain, so it is tamper-evident like every action."""
        actor = self._require_actor(actor)
        if not kind or not kind.strip():
            raise SpecError("an alert needs a kind, e.g. rollback_failed")
        with self._write(actor, model_id=model_id, lock="read") as op:
            return op.audit("alert", {"kind": kind, "detail": detail, **(payload or {})})

    def audit_entries(self, model_id: str | None = None) -> list[audit_mod.AuditEntry]:
        chain = audit_mod.chain_for(model_id)
        with db.read_tx(self.engine) as conn:
            if model_id is not None:
                self._spec(conn, model_id)
            rows = conn.execute(
                select(audit_log).where(audit_log.c.chain == chain).order_by(audit_log.c.seq)
            ).all()
        return [
            audit_mod.AuditEntry(
                id=r.id,
                chain=r.chain,
                seq=r.seq,
                model_id=r.model_id,
                version=r.version,
                action=r.action,
                ts=r.ts,
                actor=r.actor,
                payload=json.loads(r.payload),
                hash=r.hash,
            )
            for r in rows
        ]

    def verify_audit(self, model_id: str | None = None) -> audit_mod.AuditReport:
        """Check one model's chain, or every chain in the registry, and what they replay to.

        A chain whose hashes, links or head do not hold is reported as such and not
        replayed (its replay would only repeat the damage). An intact chain is replayed and
        every table row it describes is compared with it: states and percents, desired
        state, approvals, overrides, specs and versions, and (registry-wide) teams, actors,
        datasets and contracts. A model row whose chain is gone is named too.
        """
        with db.read_tx(self.engine) as conn:
            if model_id is not None:
                self._spec(conn, model_id)
                model_ids = [model_id]
                chains = [audit_mod.chain_for(model_id)]
            else:
                model_ids = list(conn.execute(select(models.c.model_id)).scalars())
                chains = sorted(
                    set(conn.execute(select(audit_log.c.chain).distinct()).scalars())
                    | set(conn.execute(text("SELECT chain FROM audit_heads")).scalars())
                    | {audit_mod.chain_for(m) for m in model_ids}
                )
            total = 0
            counted = 0
            problems: list[audit_mod.AuditProblem] = []
            for c in chains:
                rows, p = audit_mod.check_chain(conn, c)
                total += len(rows)
                mid = c.removeprefix("model:") if c.startswith("model:") else None
                if not rows and not p and mid is not None:
                    has_head = conn.execute(
                        text("SELECT 1 FROM audit_heads WHERE chain = :c"), {"c": c}
                    ).first()
                    if has_head is None:
                        problems.append(audit_mod.missing_chain(mid))
                        counted += 1
                        continue
                counted += 1 if (rows or p) else 0
                problems.extend(p)
                if p:
                    continue
                if mid is not None:
                    problems.extend(audit_mod.cross_check_model(conn, mid, list(rows)))
                elif c == audit_mod.REGISTRY_CHAIN:
                    problems.extend(audit_mod.cross_check_registry(conn, list(rows)))
            if model_id is None and audit_mod.REGISTRY_CHAIN not in chains:
                problems.extend(audit_mod.cross_check_registry(conn, []))
        return audit_mod.AuditReport(chains=counted, entries=total, problems=problems)

    def row_counts(self) -> dict[str, int]:
        """Rows per table; tests use it to prove a refused operation left nothing behind."""
        from modelops.store.tables import metadata

        with db.read_tx(self.engine) as conn:
            return {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in metadata.sorted_tables
            }
