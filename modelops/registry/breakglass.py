"""Break-glass: promote now, skipping the shadow and canary durations, under stricter rules.

It needs the requester's signed request and two signed approvals from distinct senior (or
admin) actors, neither of them the requester. It never skips the offline gates (only a
version past them may break glass) and never promotes an IRREVERSIBLE model without its
override as well. It starts 24 hours of heightened monitoring and writes a postmortem
ticket to the outbox in the same transaction, delivered to the configured webhook with
retries, so the ticket is not lost while the receiver is down. A team's third break-glass
within 30 days is refused, and the team stays locked out until an admin's signed unlock.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, insert, select, update

from modelops.errors import ApprovalRequired, IllegalTransition, SpecError
from modelops.identity import Expected, SelfApproval, SignedKind, SignedStatement, SigningKey
from modelops.spec import DEFAULT_SLICE, RollbackClass, State
from modelops.store import db
from modelops.store.tables import break_glass, outbox, overrides, team_unlocks

from .checks import team_name
from .records import IRREVERSIBLE_OVERRIDE, parse_ts
from .signatures import SignatureOps, StatementInput, statement_json, unsigned
from .transitions import TransitionOps

__all__ = [
    "BreakGlassOps",
    "BreakGlassResult",
    "BREAK_GLASS_PER_WINDOW",
    "BREAK_GLASS_WINDOW",
    "HEIGHTENED_FOR",
]

BREAK_GLASS_PER_WINDOW = 2
"""Break-glass deploys a team may make in the window; the next is refused."""
BREAK_GLASS_WINDOW = timedelta(days=30)
HEIGHTENED_FOR = timedelta(hours=24)
APPROVER_ROLES = ("senior", "admin")
_FROM = (
    State.OFFLINE_PASSED,
    State.APPROVED_SHADOW,
    State.SHADOW,
    State.APPROVED_CANARY,
    State.CANARY,
    State.AB_TEST,
)


class BreakGlassResult(BaseModel):
    model_id: str
    version: int
    slice: str
    from_state: State
    deprecated_version: int | None
    generation: int
    approvers: list[str]
    heightened_until: datetime
    ticket_id: int
    audit_id: int


class BreakGlassOps(SignatureOps, TransitionOps):
    def break_glass_epoch(self, model_id: str, version: int, slice: str = DEFAULT_SLICE) -> int:  # noqa: A002
        with db.read_tx(self.engine) as conn:
            return int(self._state_row(conn, model_id, version, slice).epoch)

    def sign_break_glass(
        self,
        model_id: str,
        version: int,
        key: SigningKey,
        *,
        signer: str,
        reason: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
    ) -> SignedStatement:
        """The requester's request, or a senior's approval of it: the same subject, signed."""
        return self.sign_as(
            key,
            kind=SignedKind.break_glass,
            signer=signer,
            epoch=self.break_glass_epoch(model_id, version, slice),
            model=model_id,
            version=version,
            slice=slice,
            target_state=State.PROMOTED.value,
            reason=reason,
        )

    def break_glass(
        self,
        model_id: str,
        version: int,
        *,
        statement: StatementInput | None = None,
        approvals: Sequence[StatementInput] = (),
        key: SigningKey | None = None,
        actor: str | None = None,
        reason: str | None = None,
        slice: str = DEFAULT_SLICE,  # noqa: A002
    ) -> BreakGlassResult:
        what = f"break-glass of {model_id}@{version} on slice {slice!r}"
        if statement is None and key is not None:
            if actor is None or not (reason or "").strip():
                raise SpecError("a break-glass needs the requester (--actor) and a reason")
            statement = self.sign_break_glass(
                model_id, version, key, signer=actor, reason=str(reason), slice=slice
            )
        if statement is None:
            raise unsigned(what)
        stmt = SignedStatement.from_obj(statement)
        signed = [SignedStatement.from_obj(a) for a in approvals]
        requester = self._require_actor(stmt.payload.signer)
        with self._write(requester, model_id=model_id, lock="slice", slice_=slice) as op:
            spec, conn = op.model, op.conn
            op.team()
            row = op.row(version, slice)
            current = State(row.state)
            if current not in _FROM:
                raise IllegalTransition(
                    f"{what}: it is {current.value}; break-glass skips the shadow and canary "
                    "durations, never the offline gates; allowed from: "
                    + ", ".join(s.value for s in _FROM)
                )
            expect = Expected(
                kind=SignedKind.break_glass,
                model=model_id,
                version=version,
                slice=slice,
                target_state=State.PROMOTED.value,
            )
            epoch = int(row.epoch)
            self._verify_signed(op, stmt, what=what, expect=expect, epoch=epoch, claimed=actor)
            approvers = self._senior_approvals(op, what, signed, requester, expect, epoch)
            if spec.rollback_class is RollbackClass.IRREVERSIBLE and not _has_override(
                conn, model_id, version, slice, epoch
            ):
                raise IllegalTransition(
                    f"{what}: {model_id} is IRREVERSIBLE; break-glass never promotes it without "
                    f"the override as well (`modelops override {model_id} {version} --slice "
                    f"{slice} --actor NAME --key FILE --reason WHY`)"
                )
            team = spec.owner_team
            self._check_allowance(conn, team, op.ts)
            # The move: as a promotion, minus the durations and the tier's approvals.
            rows = self._slice_rows(conn, model_id, slice)
            ctx = self._context(conn, spec, version, rows)
            deprecated = self._deprecate_prod(op, version, slice, State.PROMOTED, ctx)
            self._set_state(
                conn,
                model_id,
                version,
                slice,
                row,
                State.PROMOTED,
                percent=None,
                params={},
                ts=op.ts,
                actor=requester,
                reason=f"break-glass: {stmt.payload.reason}",
            )
            generation = self._write_desired(conn, model_id, slice, op.lock_row, op.ts)
            until = op.ts + HEIGHTENED_FOR
            conn.execute(
                insert(break_glass).values(
                    model_id=model_id,
                    version=version,
                    slice=slice,
                    team=team,
                    requester=requester,
                    reason=stmt.payload.reason,
                    statement=statement_json(stmt),
                    approvals_json=json.dumps([a.to_dict() for a in signed], sort_keys=True),
                    heightened_until=until.isoformat(),
                    ts=op.ts.isoformat(),
                )
            )
            ticket = {
                "kind": "postmortem",
                "title": f"postmortem: break-glass of {model_id}@{version} ({slice})",
                "model_id": model_id,
                "version": version,
                "slice": slice,
                "team": team,
                "requester": requester,
                "approvers": approvers,
                "reason": stmt.payload.reason,
                "at": op.ts.isoformat(),
                "heightened_until": until.isoformat(),
            }
            ticket_id = conn.execute(
                insert(outbox).values(
                    kind="postmortem_ticket",
                    payload=json.dumps(ticket, sort_keys=True),
                    created_at=op.ts.isoformat(),
                    attempts=0,
                    next_attempt_at=op.ts.isoformat(),
                )
            ).inserted_primary_key[0]
            audit_id = op.audit(
                "break_glass",
                {
                    "slice": slice,
                    "from": current.value,
                    "to": State.PROMOTED.value,
                    "percent": None,
                    "generation": generation,
                    "deprecated": deprecated,
                    "reason": stmt.payload.reason,
                    "team": team,
                    "skipped": "shadow and canary durations",
                    "heightened_until": until.isoformat(),
                    "ticket": int(ticket_id),
                    "statement": stmt.to_dict(),
                    "approvals": [a.to_dict() for a in signed],
                },
                version=version,
            )
            return BreakGlassResult(
                model_id=model_id,
                version=version,
                slice=slice,
                from_state=current,
                deprecated_version=deprecated,
                generation=generation,
                approvers=approvers,
                heightened_until=until,
                ticket_id=int(ticket_id),
                audit_id=audit_id,
            )

    def _senior_approvals(
        self,
        op: Any,
        what: str,
        signed: Sequence[SignedStatement],
        requester: str,
        expect: Expected,
        epoch: int,
    ) -> list[str]:
        who: list[str] = []
        for a in signed:
            signer = a.payload.signer
            if signer == requester:
                raise SelfApproval(
                    f"{requester!r} requested the {what} and signed an approval of it; "
                    "the two approvers must be others"
                )
            self._verify_signed(op, a, what=f"approval of the {what}", expect=expect, epoch=epoch)
            role = self._role_of(op.conn, signer)
            if role not in APPROVER_ROLES:
                raise ApprovalRequired(
                    f"the {what}: {signer!r} is {role}; break-glass approvers are "
                    f"{' or '.join(APPROVER_ROLES)}"
                )
            if signer not in who:
                who.append(signer)
        if len(who) < 2:
            raise ApprovalRequired(
                f"the {what} needs 2 signed approvals from distinct senior actors other than "
                f"{requester}; have: {', '.join(who) or 'none'}; approvers sign with "
                "`modelops sign-break-glass MODEL VERSION --actor NAME --key FILE --reason WHY`"
            )
        return sorted(who)

    def _check_allowance(self, conn: Any, team: str, now: datetime) -> None:
        last_unlock = conn.execute(
            select(func.max(team_unlocks.c.ts)).where(team_unlocks.c.team == team)
        ).scalar()
        since = now - BREAK_GLASS_WINDOW
        if last_unlock is not None:
            since = max(since, parse_ts(last_unlock))
        used = (
            conn.execute(
                select(break_glass.c.ts)
                .where(break_glass.c.team == team, break_glass.c.ts >= since.isoformat())
                .order_by(break_glass.c.ts)
            )
            .scalars()
            .all()
        )
        if len(used) >= BREAK_GLASS_PER_WINDOW:
            raise IllegalTransition(
                f"team {team!r} has used break-glass {len(used)} times in 30 days "
                f"({', '.join(u[:10] for u in used)}); it is locked out until an admin's signed "
                f"unlock: `modelops team unlock {team} --actor ADMIN --key FILE --reason WHY`"
            )

    def heightened_until(
        self,
        model_id: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
    ) -> datetime | None:
        """The end of the heightened monitoring a break-glass started, if it is still on:
        sensors tighten guardrails and shorten their interval until then."""
        with db.read_tx(self.engine) as conn:
            last = conn.execute(
                select(func.max(break_glass.c.heightened_until)).where(
                    break_glass.c.model_id == model_id, break_glass.c.slice == slice
                )
            ).scalar()
        if last is None:
            return None
        until = parse_ts(last)
        return until if until > self._now() else None

    def unlock_team(
        self,
        team: str,
        *,
        statement: StatementInput | None = None,
        key: SigningKey | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """An admin's signed unlock: the team's break-glass allowance starts over."""
        team = team_name(team)
        if statement is None and key is not None:
            if actor is None or not (reason or "").strip():
                raise SpecError("an unlock needs the admin (--actor) and a reason (--reason)")
            statement = self.sign_as(
                key,
                kind=SignedKind.unlock,
                signer=actor,
                epoch=self._unlocks(team),
                team=team,
                reason=str(reason),
            )
        if statement is None:
            raise unsigned(f"unlock of team {team}")
        stmt = SignedStatement.from_obj(statement)
        signer = self._require_actor(stmt.payload.signer)
        with self._write(signer) as op:
            self._require_team(op.conn, team)
            op.team()
            epoch = int(
                op.conn.execute(
                    select(func.count())
                    .select_from(team_unlocks)
                    .where(team_unlocks.c.team == team)
                ).scalar_one()
            )
            self._verify_signed(
                op,
                stmt,
                what=f"unlock of team {team}",
                expect=Expected(kind=SignedKind.unlock, team=team),
                epoch=epoch,
                claimed=actor,
            )
            role = self._role_of(op.conn, signer)
            if role != "admin":
                raise ApprovalRequired(
                    f"{signer!r} is {role}; only an admin unlocks a team's break-glass"
                )
            op.conn.execute(
                insert(team_unlocks).values(
                    team=team,
                    actor=signer,
                    reason=stmt.payload.reason,
                    statement=statement_json(stmt),
                    ts=op.ts.isoformat(),
                )
            )
            op.audit(
                "unlock_team",
                {"team": team, "reason": stmt.payload.reason, "statement": stmt.to_dict()},
            )

    def _unlocks(self, team: str) -> int:
        with db.read_tx(self.engine) as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(team_unlocks)
                    .where(team_unlocks.c.team == team)
                ).scalar_one()
            )

    # ------------------------------------------------------------------ the outbox

    def deliver_outbox(self, url: str, *, timeout_s: float = 5.0) -> tuple[int, int]:
        """POST each due message to `url` (JSON); a failure is retried later with backoff.

        Returns (delivered now, still pending). Each message is marked in its own
        transaction after its POST, so a crash re-sends at most that one (receivers dedupe
        on the message's `outbox_id`).
        """
        now = self._now()
        with db.read_tx(self.engine) as conn:
            due = conn.execute(
                select(outbox)
                .where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now.isoformat())
                .order_by(outbox.c.id)
            ).all()
        delivered = 0
        for m in due:
            body = json.dumps({"outbox_id": m.id, **json.loads(m.payload)}).encode()
            req = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            error = None
            try:
                with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310
                    if not 200 <= resp.status < 300:
                        error = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                error = str(getattr(exc, "reason", exc))
            with db.write_tx(self.engine) as conn:
                if error is None:
                    conn.execute(
                        update(outbox)
                        .where(outbox.c.id == m.id)
                        .values(delivered_at=now.isoformat(), attempts=m.attempts + 1)
                    )
                    delivered += 1
                else:
                    backoff = timedelta(seconds=min(2 ** (m.attempts + 1), 300))
                    conn.execute(
                        update(outbox)
                        .where(outbox.c.id == m.id)
                        .values(
                            attempts=m.attempts + 1,
                            next_attempt_at=(now + backoff).isoformat(),
                            last_error=error[:500],
                        )
                    )
        with db.read_tx(self.engine) as conn:
            pending = int(
                conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.delivered_at.is_(None))
                ).scalar_one()
            )
        return delivered, pending


def _has_override(conn: Any, model_id: str, version: int, slice_: str, epoch: int) -> bool:
    return (
        conn.execute(
            select(overrides.c.id).where(
                overrides.c.model_id == model_id,
                overrides.c.version == version,
                overrides.c.slice == slice_,
                overrides.c.epoch == epoch,
                overrides.c.kind == IRREVERSIBLE_OVERRIDE,
            )
        ).first()
        is not None
    )
