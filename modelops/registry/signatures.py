"""Keys, signed statements and their verification, as the registry stores them.

An actor is a key, not a name: approvals, overrides and spec amendments arrive as signed
statements (`modelops.identity`), and the registry verifies each one inside the write
transaction that uses it, against the keys in `actor_keys`, the state epoch under the lock,
its own clock and the `signed_nonces` table. The nonce is consumed in that same
transaction, so a refused statement consumes nothing and a used one can never be replayed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update
from sqlalchemy import exc as sa_exc

from modelops.errors import (
    ConflictError,
    IllegalTransition,
    NotFoundError,
    SignatureRefused,
    SpecError,
)
from modelops.identity import (
    ActorKey,
    Expected,
    PublicKey,
    ReplayedSignature,
    SignedKind,
    SignedStatement,
    SigningKey,
    UnsignedStatement,
    WrongSubject,
    load_public_key,
    sign_statement,
    verify_statement,
)
from modelops.spec import DEFAULT_SLICE, State
from modelops.store import db
from modelops.store.tables import actor_keys, actors, signed_nonces

from .checks import actor_name, team_name
from .records import parse_ts
from .statements import RegistryBase, WriteOp

__all__ = [
    "SignatureOps",
    "ROLES",
    "SERVICE_ROLE",
    "UnsignedStatement",
    "StatementInput",
    "unsigned",
    "statement_json",
    "CASCADE_TARGET",
]

CASCADE_TARGET = State.ROLLED_BACK
# What a cascade rolls back in a dependent: the version a bare rollback would pick.
_CASCADE_PICK = (State.CANARY, State.AB_TEST, State.SHADOW, State.PROMOTED)

ROLES = ("engineer", "senior", "admin", "service")
"""engineer: approves; senior: also break-glass approvals; admin: manages actors and keys;
service: the key sensors and jobs sign with, and the anchors' signer."""
SERVICE_ROLE = "service"

StatementInput = SignedStatement | bytes | str | dict[str, Any]


def unsigned(what: str) -> UnsignedStatement:
    return UnsignedStatement(
        f"the {what} is unsigned; allowed: a statement signed with the signer's registered "
        "key (--key FILE; make one with `modelops keygen`, register it with `modelops actor add`)"
    )


def _role(role: str) -> str:
    r = (role or "").strip().lower()
    if r not in ROLES:
        raise SpecError(f"role {role!r} is not allowed; allowed: {', '.join(ROLES)}")
    return r


class SignatureOps(RegistryBase):
    # ------------------------------------------------------------------ actors and keys

    def enroll_actor(
        self,
        name: str,
        team: str,
        *,
        role: str = "engineer",
        public_key: PublicKey | str | bytes | None = None,
        actor: str = "admin",
    ) -> str | None:
        """Register an actor with its role and (optionally) its first key, in one transaction.

        Returns the key id. Re-enrolling an existing actor with the same team and role only
        adds the key, so `actor add` is safe to rerun.
        """
        name = actor_name(name)
        team = team_name(team)
        role = _role(role)
        key = _as_public_key(public_key) if public_key is not None else None
        with db.write_tx(self.engine) as conn:
            with self._write(actor, within=conn) as op:
                self._require_team(op.conn, team)
                row = op.conn.execute(select(actors).where(actors.c.name == name)).first()
                if row is not None:
                    have = row.role or "engineer"
                    if row.team != team or have != role:
                        raise ConflictError(
                            f"actor {name!r} already exists in team {row.team!r} as {have}, "
                            f"not team {team!r} as {role}; an actor's team and role are fixed"
                        )
                    op.unchanged(None)
                else:
                    op.conn.execute(
                        insert(actors).values(
                            name=name, team=team, role=role, created_at=op.ts.isoformat()
                        )
                    )
                    op.audit("add_actor", {"name": name, "team": team, "role": role})
            if key is None:
                return None
            return self._add_key(conn, name, key, actor)

    def add_key(
        self, name: str, public_key: PublicKey | str | bytes, *, actor: str = "admin"
    ) -> str:
        """Another key for an existing actor (a rotation: add the new one, revoke the old)."""
        key = _as_public_key(public_key)
        with db.write_tx(self.engine) as conn:
            return self._add_key(conn, actor_name(name), key, actor)

    def _add_key(self, conn: Connection, name: str, key: PublicKey, actor: str) -> str:
        with self._write(actor, within=conn) as op:
            self._actor_team(op.conn, name)
            row = op.conn.execute(
                select(actor_keys.c.actor).where(actor_keys.c.key_id == key.key_id)
            ).first()
            if row is not None:
                if row.actor != name:
                    raise ConflictError(
                        f"key {key.key_id[:16]} is already registered to {row.actor!r}; "
                        "allowed: one actor per key (generate another with `modelops keygen`)"
                    )
                return op.unchanged(key.key_id)
            op.conn.execute(
                insert(actor_keys).values(
                    key_id=key.key_id,
                    actor=name,
                    public_key=key.to_pem().decode(),
                    created_at=op.ts.isoformat(),
                )
            )
            op.audit("add_key", {"name": name, "key_id": key.key_id})
            return key.key_id

    def revoke_key(self, key_id: str, *, reason: str, actor: str = "admin") -> None:
        """A revoked key signs nothing new; what it signed before stays verifiable."""
        if not reason or not reason.strip():
            raise SpecError("a key revocation needs a reason (--reason WHY)")
        with self._write(actor) as op:
            row = _find_key(op.conn, key_id)
            if row.revoked_at is not None:
                return op.unchanged(None)
            op.conn.execute(
                update(actor_keys)
                .where(actor_keys.c.key_id == row.key_id)
                .values(revoked_at=op.ts.isoformat(), revoked_reason=reason)
            )
            op.audit("revoke_key", {"name": row.actor, "key_id": row.key_id, "reason": reason})

    def actor_keys(self, name: str | None = None) -> list[dict[str, Any]]:
        """Registered keys (all, or one actor's), revoked ones included."""
        q = select(actor_keys).order_by(actor_keys.c.actor, actor_keys.c.created_at)
        if name is not None:
            q = q.where(actor_keys.c.actor == actor_name(name))
        with db.read_tx(self.engine) as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # ------------------------------------------------------------------ verification

    @staticmethod
    def _keys_for(conn: Connection, signer: str, key_id: str) -> list[ActorKey]:
        """The signer's keys, and whoever else holds the presented key id (so a statement
        signed with someone else's key is named as such)."""
        rows = conn.execute(
            select(actor_keys).where(
                or_(actor_keys.c.actor == signer, actor_keys.c.key_id == key_id)
            )
        ).all()
        return [_actor_key(r) for r in rows]

    @staticmethod
    def _all_keys(conn: Connection) -> dict[str, ActorKey]:
        return {r.key_id: _actor_key(r) for r in conn.execute(select(actor_keys)).all()}

    def _verify_signed(
        self,
        op: WriteOp,
        statement: StatementInput | None,
        *,
        what: str,
        expect: Expected,
        epoch: int,
        acting_actor: str | None = None,
        claimed: str | None = None,
    ) -> SignedStatement:
        """Verify a statement for this operation and consume its nonce, or refuse (one line).

        `claimed` is the actor name the caller passed alongside: it must be the signer.
        """
        if statement is None:
            raise unsigned(what)
        stmt = SignedStatement.from_obj(statement)
        conn = op.conn
        signer = stmt.payload.signer
        verify_statement(
            stmt,
            keys=self._keys_for(conn, signer, stmt.key_id),
            now=op.ts,
            current_epoch=epoch,
            nonce_seen=lambda n: (
                conn.execute(
                    select(signed_nonces.c.nonce).where(signed_nonces.c.nonce == n)
                ).first()
                is not None
            ),
            acting_actor=acting_actor,
            expect=expect,
        )
        if claimed is not None and actor_name(claimed) != signer:
            raise SignatureRefused(
                f"the {what} is signed by {signer!r}, not by {actor_name(claimed)!r}; "
                "allowed: --actor names the signer of --key"
            )
        try:
            conn.execute(
                insert(signed_nonces).values(
                    nonce=stmt.payload.nonce,
                    signer=signer,
                    kind=stmt.payload.kind.value,
                    key_id=stmt.key_id,
                    recorded_at=op.ts.isoformat(),
                )
            )
        except sa_exc.IntegrityError:  # another registry consumed it since we looked
            raise ReplayedSignature(
                f"the {stmt.payload.describe()} by {signer!r} was just used by a concurrent "
                f"request (nonce {stmt.payload.nonce[:12]}); allowed: each signed statement once"
            ) from None
        return stmt

    def sign_as(
        self,
        key: SigningKey,
        *,
        kind: SignedKind | str,
        signer: str,
        epoch: int,
        **fields: Any,
    ) -> SignedStatement:
        """Sign with a key the caller holds, dated by this registry's clock (tests and the CLI
        sign in-process; a remote signer uses `identity.sign_statement` directly)."""
        return sign_statement(
            key, kind=kind, signer=actor_name(signer), epoch=epoch, now=self._now(), **fields
        )

    def _role_of(self, conn: Connection, name: str) -> str:
        row = conn.execute(select(actors.c.role).where(actors.c.name == name)).first()
        if row is None:
            raise NotFoundError(f"unknown actor {name!r}")
        return str(row.role or "engineer")

    def service_keys(self, conn: Connection) -> list[ActorKey]:
        rows = conn.execute(
            select(actor_keys)
            .join(actors, actors.c.name == actor_keys.c.actor)
            .where(actors.c.role == SERVICE_ROLE)
        ).all()
        return [_actor_key(r) for r in rows]

    # ------------------------------------------------------------------ cascade approvals

    def _cascade_subject(self, conn: Connection, dependent: str, slice_: str) -> tuple[int, int]:
        """(version, state epoch) a cascade into `dependent` rolls back on the slice."""
        rows = {r.state: r for r in self._slice_rows(conn, dependent, slice_)}
        pick = next((rows[s] for s in _CASCADE_PICK if s in rows), None)
        if pick is None:
            raise IllegalTransition(
                f"nothing to cascade into: {dependent!r} has no version in CANARY, AB_TEST, "
                f"SHADOW or PROMOTED on slice {slice_!r}"
            )
        return pick.version, int(self._state_row(conn, dependent, pick.version, slice_).epoch)

    def sign_cascade_approval(
        self,
        root: str,
        dependent: str,
        key: SigningKey,
        *,
        signer: str,
        slice: str = DEFAULT_SLICE,  # noqa: A002
    ) -> SignedStatement:
        """An approval to roll `dependent`'s serving version back because `root` is rolled
        back: signed over the dependent, its version, slice, ROLLED_BACK and its epoch, so
        it authorizes that one move and nothing after the dependent moves again."""
        with db.read_tx(self.engine) as conn:
            version, epoch = self._cascade_subject(conn, dependent, slice)
        return self.sign_as(
            key,
            kind=SignedKind.cascade_approval,
            signer=signer,
            epoch=epoch,
            model=dependent,
            version=version,
            slice=slice,
            target_state=CASCADE_TARGET.value,
            cascade_root=root,
        )

    def _cascade_expect(
        self, conn: Connection, root: str, slice_: str, statement: StatementInput | None
    ) -> tuple[SignedStatement, Expected, int]:
        if statement is None or (
            isinstance(statement, str) and not statement.lstrip().startswith("{")
        ):
            shown = f" {statement!r}" if statement else ""
            raise unsigned(f"cascade approval{shown}")
        stmt = SignedStatement.from_obj(statement)
        p = stmt.payload
        if p.kind is not SignedKind.cascade_approval or not p.model:
            raise WrongSubject(
                f"the signature by {p.signer!r} is a {p.kind.value}, not a cascade approval; "
                "allowed: a statement from `modelops sign-cascade`"
            )
        version, epoch = self._cascade_subject(conn, p.model, slice_)
        expect = Expected(
            kind=SignedKind.cascade_approval,
            model=p.model,
            version=version,
            slice=slice_,
            target_state=CASCADE_TARGET.value,
            cascade_root=root,
        )
        return stmt, expect, epoch

    def check_cascade_approvals(
        self,
        root: str,
        slice_: str,
        statements: Sequence[StatementInput],
        *,
        actor: str,
    ) -> list[tuple[str, str, str]]:
        """(dependent, approver, team) per statement, verified but not consumed: the dry run
        and the run's up-front plan. Refuses the first bad one (one line, nothing written)."""
        out: list[tuple[str, str, str]] = []
        now: datetime = self._now()
        with db.read_tx(self.engine) as conn:
            for raw in statements:
                stmt, expect, epoch = self._cascade_expect(conn, root, slice_, raw)
                p = verify_statement(
                    stmt,
                    keys=self._keys_for(conn, stmt.payload.signer, stmt.key_id),
                    now=now,
                    current_epoch=epoch,
                    nonce_seen=lambda n: _nonce_used(conn, n),
                    acting_actor=actor_name(actor) if actor else None,
                    expect=expect,
                )
                out.append((str(p.model), p.signer, self._actor_team(conn, p.signer)))
        return out

    def _consume_cascade_approvals(
        self, op: WriteOp, root: str, slice_: str, statements: Sequence[StatementInput]
    ) -> list[dict[str, Any]]:
        """Verify every cascade approval and consume its nonce inside the root rollback's
        transaction: the rollback, its approvals and their nonces commit together or not at
        all, so a refused approval leaves no row and a used one cannot be replayed."""
        out = []
        for raw in statements:
            stmt, expect, epoch = self._cascade_expect(op.conn, root, slice_, raw)
            self._verify_signed(
                op,
                stmt,
                what=f"cascade approval of {stmt.payload.model}",
                expect=expect,
                epoch=epoch,
                acting_actor=op.actor,
            )
            out.append(stmt.to_dict())
        return out


def _nonce_used(conn: Connection, nonce: str) -> bool:
    q = select(signed_nonces.c.nonce).where(signed_nonces.c.nonce == nonce)
    return conn.execute(q).first() is not None


def _actor_key(r: Any) -> ActorKey:
    return ActorKey(
        actor=r.actor,
        key=PublicKey.from_pem(r.public_key, source=f"stored key {r.key_id[:16]}"),
        revoked_at=parse_ts(r.revoked_at) if r.revoked_at else None,
    )


def _find_key(conn: Connection, key_id: str) -> Any:
    key_id = (key_id or "").strip().lower()
    if len(key_id) < 8:
        raise SpecError(f"key id {key_id!r} is too short; allowed: 8 or more hex characters")
    rows = conn.execute(select(actor_keys).where(actor_keys.c.key_id.startswith(key_id))).all()
    if not rows:
        raise NotFoundError(f"no registered key starts with {key_id!r}; see `modelops actor keys`")
    if len(rows) > 1:
        raise SpecError(f"key id {key_id!r} is ambiguous ({len(rows)} keys); give more of it")
    return rows[0]


def _as_public_key(key: PublicKey | str | bytes) -> PublicKey:
    return key if isinstance(key, PublicKey) else load_public_key(key)


def statement_json(stmt: SignedStatement) -> str:
    return stmt.to_bytes().decode("utf-8")
