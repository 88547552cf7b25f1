"""What a signature covers (SignedPayload), the signed envelope (SignedStatement), what the
caller is about to do (Expected), and signing."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, ValidationError, field_validator, model_validator

from modelops.errors import SpecError
from modelops.identity.canonical import (
    _ACTOR,
    _HEX64,
    _ID,
    _NONCE,
    _STATE,
    _STATEMENT_DOMAIN,
    _TS,
    _canonical_json,
    _Frozen,
    _parse_envelope,
    _parse_ts,
    _SignedEnvelope,
    canonical_ts,
)
from modelops.identity.keys import SigningKey
from modelops.identity.refusals import MalformedStatement
from modelops.identity.wording import _pyd_line


class SignedKind(StrEnum):
    approval = "approval"
    override = "override"
    break_glass = "break_glass"
    cascade_approval = "cascade_approval"
    spec_amendment = "spec_amendment"
    unlock = "unlock"
    service_action = "service_action"


APPROVING_KINDS = frozenset({SignedKind.approval, SignedKind.cascade_approval})
"""Kinds that vouch for someone else's action: the acting actor may not sign them."""

# Fields each kind must carry, so a signature always says exactly what it authorizes.
_REQUIRED: dict[SignedKind, tuple[str, ...]] = {
    SignedKind.approval: ("model", "version", "slice", "target_state"),
    SignedKind.override: ("model", "version", "slice", "target_state", "reason"),
    SignedKind.break_glass: ("model", "version", "slice", "target_state", "reason"),
    SignedKind.cascade_approval: ("model", "version", "slice", "target_state", "cascade_root"),
    SignedKind.spec_amendment: ("model", "spec_sha256", "reason"),
    SignedKind.unlock: ("team", "reason"),
    SignedKind.service_action: ("model", "action"),
}


class SignedPayload(_Frozen):
    """What a signature covers. Integers and strings only: no float has two spellings."""

    v: Literal[1] = 1
    kind: SignedKind
    signer: str
    model: str | None = None
    version: int | None = None
    slice: str | None = None
    target_state: str | None = None
    epoch: int
    ts: str
    nonce: str
    reason: str = ""
    spec_sha256: str | None = None
    team: str | None = None
    cascade_root: str | None = None
    action: str | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, v: Any) -> Any:
        # Strict mode accepts only enum members; the JSON spelling is the value string.
        if isinstance(v, str) and not isinstance(v, SignedKind):
            try:
                return SignedKind(v)
            except ValueError:
                allowed = ", ".join(k.value for k in SignedKind)
                raise ValueError(f"unknown kind {v!r}; allowed: {allowed}") from None
        return v

    @field_validator("signer")
    @classmethod
    def _signer(cls, v: str) -> str:
        if not _ACTOR.match(v):
            raise ValueError(f"signer {v!r} is not an actor name")
        return v

    @field_validator("model", "slice", "team")
    @classmethod
    def _ids(cls, v: str | None) -> str | None:
        if v is not None and not _ID.match(v):
            raise ValueError(f"{v!r} is not an id (a-z, 0-9, '_', '.', '-')")
        return v

    @field_validator("target_state")
    @classmethod
    def _state(cls, v: str | None) -> str | None:
        if v is not None and not _STATE.match(v):
            raise ValueError(f"target_state {v!r} is not a state name")
        return v

    @field_validator("version", "epoch")
    @classmethod
    def _nonneg(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v < 2**63:
            raise ValueError("must be a non-negative 64-bit integer")
        return v

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: str) -> str:
        if not _TS.match(v):
            raise ValueError("ts must be YYYY-MM-DDTHH:MM:SS.ffffffZ (UTC)")
        _parse_ts(v)
        return v

    @field_validator("nonce")
    @classmethod
    def _nonce(cls, v: str) -> str:
        if not _NONCE.match(v):
            raise ValueError("nonce must be 32 lowercase hex characters")
        return v

    @field_validator("spec_sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not _HEX64.match(v):
            raise ValueError("spec_sha256 must be 64 lowercase hex characters")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> SignedPayload:
        missing = [f for f in _REQUIRED[self.kind] if getattr(self, f) in (None, "")]
        if missing:
            raise ValueError(f"a {self.kind.value} must name {', '.join(missing)}")
        return self

    @property
    def signed_at(self) -> datetime:
        return _parse_ts(self.ts)

    def canonical_bytes(self) -> bytes:
        """The exact bytes signed: domain tag, then sorted-key compact UTF-8 JSON."""
        return _STATEMENT_DOMAIN + _canonical_json(self.model_dump(mode="json"))

    def describe(self) -> str:
        """Short subject for error lines: what this signature authorizes."""
        if self.kind is SignedKind.unlock:
            return f"unlock of team {self.team}"
        if self.kind is SignedKind.spec_amendment:
            return f"amendment of {self.model} (spec {str(self.spec_sha256)[:12]})"
        if self.kind is SignedKind.service_action:
            return f"{self.action} on {self.model}"
        return (
            f"{self.kind.value} of {self.model}@{self.version} slice {self.slice} "
            f"-> {self.target_state}"
        )


class SignedStatement(_SignedEnvelope):
    """A payload, the id of the key that signed it, and the signature (lowercase hex)."""

    payload: SignedPayload

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedStatement:
        """Accept only the canonical encoding, so every byte of a statement is meaningful."""
        stmt = _parse_envelope(cls, data, "signed statement")
        if stmt.to_bytes() != data:
            raise MalformedStatement(
                "signed statement is not in canonical form (sorted-key compact UTF-8 JSON); "
                "it was altered after signing"
            )
        return stmt

    @classmethod
    def from_obj(cls, obj: Any) -> SignedStatement:
        """From a parsed JSON object, e.g. an HTTP request body."""
        if isinstance(obj, SignedStatement):
            return obj
        if isinstance(obj, bytes | bytearray):
            return cls.from_bytes(bytes(obj))
        if isinstance(obj, str):
            return cls.from_bytes(obj.encode("utf-8"))
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            raise MalformedStatement(f"signed statement is malformed: {_pyd_line(exc)}") from None


def _nonce() -> str:
    return secrets.token_hex(16)


def sign_statement(
    key: SigningKey,
    *,
    kind: SignedKind | str,
    signer: str,
    epoch: int,
    now: datetime,
    model: str | None = None,
    version: int | None = None,
    slice: str | None = None,  # noqa: A002 - the registry's word for it
    target_state: str | None = None,
    reason: str = "",
    spec_sha256: str | None = None,
    team: str | None = None,
    cascade_root: str | None = None,
    action: str | None = None,
    nonce: str | None = None,
) -> SignedStatement:
    """Build and sign a payload; invalid fields are a SpecError naming what is allowed."""
    try:
        payload = SignedPayload(
            kind=SignedKind(kind),
            signer=signer,
            model=model,
            version=version,
            slice=slice,
            target_state=str(target_state) if target_state is not None else None,
            epoch=epoch,
            ts=canonical_ts(now),
            nonce=nonce or _nonce(),
            reason=reason,
            spec_sha256=spec_sha256,
            team=team,
            cascade_root=cascade_root,
            action=action,
        )
    except ValidationError as exc:
        raise SpecError(f"cannot sign: {_pyd_line(exc)}") from None
    except ValueError:
        allowed = ", ".join(k.value for k in SignedKind)
        raise SpecError(f"cannot sign: unknown kind {kind!r}; allowed: {allowed}") from None
    sig = key.sign(payload.canonical_bytes())
    return SignedStatement(payload=payload, key_id=key.key_id, signature=sig.hex())


class Expected(_Frozen):
    """What the caller is about to do; a genuine signature over anything else is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    kind: SignedKind | None = None
    model: str | None = None
    version: int | None = None
    slice: str | None = None
    target_state: str | None = None
    spec_sha256: str | None = None
    team: str | None = None
    cascade_root: str | None = None
    action: str | None = None
