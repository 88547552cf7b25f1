"""Verification is pure: the caller hands in the signer's registered keys, the current
epoch, the clock and a "nonce already seen" lookup, so the registry can back each of them with
a table and this stays testable in milliseconds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from modelops.identity.canonical import canonical_ts
from modelops.identity.keys import ActorKey
from modelops.identity.refusals import (
    ExpiredSignature,
    ForgedSignature,
    ReplayedSignature,
    RevokedKey,
    SelfApproval,
    UnknownKey,
    WrongEpoch,
    WrongSubject,
)
from modelops.identity.statements import (
    APPROVING_KINDS,
    Expected,
    SignedPayload,
    SignedStatement,
)
from modelops.identity.wording import _span

DEFAULT_MAX_AGE = timedelta(minutes=15)
"""A signed statement is used within minutes of signing; an older one is a replay risk."""
DEFAULT_MAX_SKEW = timedelta(minutes=2)
"""How far a signer's clock may run ahead of the registry's."""


def _resolve_key(stmt: SignedStatement, keys: Iterable[ActorKey]) -> ActorKey:
    p = stmt.payload
    for k in keys:
        if k.key.key_id == stmt.key_id:
            if k.actor != p.signer:
                raise UnknownKey(
                    f"key {stmt.key_id[:16]} belongs to actor {k.actor!r}, not to the signer "
                    f"{p.signer!r}; a statement is signed with the signer's own registered key"
                )
            return k
    raise UnknownKey(
        f"key {stmt.key_id[:16]} is not registered to actor {p.signer!r}; allowed: a key "
        f"added with `modelops actor add {p.signer} --public-key FILE`"
    )


def _check_signature(stmt: SignedStatement, key: ActorKey) -> None:
    p = stmt.payload
    if not key.key.verify(bytes.fromhex(stmt.signature), p.canonical_bytes()):
        raise ForgedSignature(
            f"signature on the {p.describe()} by {p.signer!r} (key {stmt.key_id[:16]}) does "
            "not verify: the payload was altered or another key signed it"
        )


def _check_window(
    p: SignedPayload, at: datetime, max_age: timedelta, max_skew: timedelta, *, ref: str
) -> None:
    signed = p.signed_at
    if signed > at + max_skew:
        raise ExpiredSignature(
            f"the {p.describe()} by {p.signer!r} is dated {p.ts}, "
            f"{_span(signed - at)} after {ref}; allowed clock skew: {_span(max_skew)}"
        )
    if at - signed > max_age:
        raise ExpiredSignature(
            f"the {p.describe()} by {p.signer!r} was signed {p.ts}, {_span(at - signed)} "
            f"before {ref}; allowed: at most {_span(max_age)} old, sign again"
        )


def verify_statement(
    statement: SignedStatement | bytes | dict[str, Any],
    *,
    keys: Iterable[ActorKey],
    now: datetime,
    current_epoch: int,
    nonce_seen: Callable[[str], bool],
    acting_actor: str | None = None,
    expect: Expected | None = None,
    max_age: timedelta = DEFAULT_MAX_AGE,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> SignedPayload:
    """Return the verified payload, or raise the one SignatureRefused that says why.

    `keys` are the signer's registered keys (with revocation times); `nonce_seen` says
    whether a nonce was already consumed. Recording the nonce is the caller's job, in the
    same transaction as the action, so a refused statement consumes nothing.
    Checks run from "who signed" to "is it still usable": malformed, unknown key, revoked
    key, forged, self-approval, wrong subject, replayed, wrong epoch, expired.
    """
    stmt = SignedStatement.from_obj(statement)
    p = stmt.payload
    key = _resolve_key(stmt, keys)
    if key.revoked_by(now):
        assert key.revoked_at is not None
        raise RevokedKey(
            f"key {stmt.key_id[:16]} of {p.signer!r} was revoked at "
            f"{canonical_ts(key.revoked_at)}; allowed: a statement signed with a current key"
        )
    _check_signature(stmt, key)
    if acting_actor is not None and p.kind in APPROVING_KINDS and p.signer == acting_actor:
        raise SelfApproval(
            f"{p.signer!r} signed the {p.describe()} and is also the acting actor; "
            "an approval must come from someone else"
        )
    if expect is not None:
        wrong = [
            f"{f}={getattr(p, f)!r} (expected {getattr(expect, f)!r})"
            for f in Expected.model_fields
            if getattr(expect, f) is not None and getattr(p, f) != getattr(expect, f)
        ]
        if wrong:
            raise WrongSubject(
                f"the signature by {p.signer!r} is for another subject: {'; '.join(wrong)}"
            )
    if nonce_seen(p.nonce):
        raise ReplayedSignature(
            f"the {p.describe()} by {p.signer!r} was already used (nonce {p.nonce[:12]}); "
            "allowed: each signed statement once, sign a fresh one"
        )
    if p.epoch != current_epoch:
        raise WrongEpoch(
            f"the {p.describe()} by {p.signer!r} was signed at state epoch {p.epoch}, "
            f"but the state is now at epoch {current_epoch}; sign again against the current state"
        )
    _check_window(p, now, max_age, max_skew, ref="now")
    return p


def reverify_recorded(
    statement: SignedStatement | bytes | dict[str, Any],
    *,
    keys: Iterable[ActorKey],
    recorded_at: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
    max_skew: timedelta = DEFAULT_MAX_SKEW,
) -> SignedPayload:
    """Re-check a statement already in the audit log, as of when it was recorded.

    A key revoked later does not void what it signed before; the audit entry's own time
    (protected by the hash chain and its anchors) is the reference, not the signer's clock.
    Epoch and nonce were checked at the time; uniqueness of nonces across the log is the
    auditor's job.
    """
    stmt = SignedStatement.from_obj(statement)
    p = stmt.payload
    key = _resolve_key(stmt, keys)
    if key.revoked_by(recorded_at):
        assert key.revoked_at is not None
        raise RevokedKey(
            f"key {stmt.key_id[:16]} of {p.signer!r} was revoked at "
            f"{canonical_ts(key.revoked_at)}, before this statement was recorded at "
            f"{canonical_ts(recorded_at)}"
        )
    _check_signature(stmt, key)
    _check_window(p, recorded_at, max_age, max_skew, ref="it was recorded")
    return p
