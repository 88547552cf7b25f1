"""Identity that cannot be forged: Ed25519 keys, signed statements, chain-head anchors.

An actor is a key, not a name. Every approval, override, break-glass request, cascade
approval, spec amendment, unlock and service action is a `SignedStatement`: a canonical
payload (what is approved, at which state epoch, when, with a fresh nonce) plus an Ed25519
signature over its canonical bytes. Verification is pure: the caller hands in the signer's
registered keys, the current epoch, the clock and a "nonce already seen" lookup, so the
registry can back each of them with a table and the core stays testable in milliseconds.

Each refusal is its own typed error with a one-line message, because "refused" alone does
not tell an operator whether to re-sign, rotate a key or call security.

Anchors: a signed checkpoint of every audit chain head, kept outside the database, so a
rewrite of a whole chain that is internally consistent still differs from what was anchored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from modelops.errors import SignatureRefused, SpecError

__all__ = [
    "SignedKind",
    "APPROVING_KINDS",
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_SKEW",
    "SigningKey",
    "PublicKey",
    "ActorKey",
    "generate_signing_key",
    "write_keypair",
    "load_signing_key",
    "load_public_key",
    "SignedPayload",
    "SignedStatement",
    "Expected",
    "sign_statement",
    "verify_statement",
    "reverify_recorded",
    "ForgedSignature",
    "MalformedStatement",
    "ReplayedSignature",
    "ExpiredSignature",
    "WrongEpoch",
    "WrongSubject",
    "UnknownKey",
    "RevokedKey",
    "SelfApproval",
    "ChainHead",
    "AnchorCheckpoint",
    "SignedAnchor",
    "AnchorProblem",
    "make_anchor",
    "check_anchor",
    "canonical_ts",
    "measure_verification_cost",
]

DEFAULT_MAX_AGE = timedelta(minutes=15)
"""A signed statement is used within minutes of signing; an older one is a replay risk."""
DEFAULT_MAX_SKEW = timedelta(minutes=2)
"""How far a signer's clock may run ahead of the registry's."""

_STATEMENT_DOMAIN = b"modelops-signed-statement-v1\n"
_ANCHOR_DOMAIN = b"modelops-chain-anchor-v1\n"
# Domain separation: a signature over an anchor can never pass as an approval, or back.

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX128 = re.compile(r"^[0-9a-f]{128}$")
_NONCE = re.compile(r"^[0-9a-f]{32}$")
_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
_ACTOR = re.compile(r"^[a-z0-9][a-z0-9._:@+-]{0,255}$")  # the registry's actor spelling
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")  # model, slice, team ids
_STATE = re.compile(r"^[A-Z][A-Z_]{0,63}$")


# ------------------------------------------------------------------------------ errors


class ForgedSignature(SignatureRefused):
    """The signature does not verify: the payload was altered or another key signed it."""

    reason = "forged"


class MalformedStatement(ForgedSignature):
    """Not a well-formed, canonical signed statement: nothing our signer ever produces."""

    reason = "malformed"


class ReplayedSignature(SignatureRefused):
    reason = "replayed"


class ExpiredSignature(SignatureRefused):
    reason = "expired"


class WrongEpoch(SignatureRefused):
    reason = "wrong_epoch"


class WrongSubject(SignatureRefused):
    """A genuine signature over something else (another version, slice or target)."""

    reason = "wrong_subject"


class UnknownKey(SignatureRefused):
    reason = "unknown_key"


class RevokedKey(SignatureRefused):
    reason = "revoked_key"


class SelfApproval(SignatureRefused):
    reason = "self_approval"


# ------------------------------------------------------------------------------ keys


def _key_id(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()


class PublicKey:
    """An Ed25519 public key; its key id is the sha256 of the 32 raw key bytes."""

    __slots__ = ("_key", "raw", "key_id")

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self.raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = _key_id(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.key_id[:16]}…)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    @classmethod
    def from_pem(cls, data: bytes | str, *, source: str = "public key") -> PublicKey:
        if isinstance(data, str):
            data = data.encode()
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise SpecError(
                f"{source} is not a PEM public key ({_first_line(exc)}); "
                "allowed: an Ed25519 SubjectPublicKeyInfo PEM from `modelops keygen`"
            ) from None
        if not isinstance(key, Ed25519PublicKey):
            raise SpecError(
                f"{source} is a {type(key).__name__}, not an Ed25519 key; allowed: Ed25519 only"
            )
        return cls(key)

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        return cls(Ed25519PublicKey.from_public_bytes(raw))

    def to_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class SigningKey:
    """An Ed25519 private key. It never leaves this object except as PEM to a 0600 file."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = PublicKey(key.public_key())

    def __repr__(self) -> str:
        return f"SigningKey({self.public_key.key_id[:16]}…)"

    @property
    def key_id(self) -> str:
        return self.public_key.key_id

    @classmethod
    def from_pem(
        cls, data: bytes | str, *, passphrase: bytes | None = None, source: str = "private key"
    ) -> SigningKey:
        """Also the way a service key arrives through an environment variable."""
        if isinstance(data, str):
            data = data.encode()
        try:
            key = serialization.load_pem_private_key(data, password=passphrase)
        except (ValueError, TypeError) as exc:
            raise SpecError(
                f"{source} is not a readable PEM private key ({_first_line(exc)}); "
                "allowed: an Ed25519 PKCS8 PEM from `modelops keygen`, with its passphrase "
                "if it has one"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SpecError(
                f"{source} is a {type(key).__name__}, not an Ed25519 key; allowed: Ed25519 only"
            )
        return cls(key)

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase)
            if passphrase
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
        )

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


@dataclass(frozen=True, slots=True)
class ActorKey:
    """One registered key of an actor, as the registry hands it to verification."""

    actor: str
    key: PublicKey
    revoked_at: datetime | None = None

    def revoked_by(self, at: datetime) -> bool:
        return self.revoked_at is not None and self.revoked_at <= at


def generate_signing_key() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def write_keypair(
    key: SigningKey,
    private_path: str | os.PathLike[str],
    public_path: str | os.PathLike[str] | None = None,
    *,
    passphrase: bytes | None = None,
) -> tuple[Path, Path]:
    """Private key 0600 from the first byte (created with that mode, never chmod-ed later);
    refuses to overwrite, because a silently replaced key orphans every registration of it."""
    private_path = Path(private_path)
    public_path = Path(public_path) if public_path else private_path.with_name(
        private_path.name + ".pub"
    )
    for p in (private_path, public_path):
        if p.exists():
            raise SpecError(f"key file {p} already exists; refusing to overwrite a key")
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.to_pem(passphrase))
        os.chmod(private_path, 0o600)  # in case a umask-less filesystem widened it
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.public_key.to_pem())
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return private_path, public_path


def load_signing_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None
) -> SigningKey:
    """Refuses a private key others can read: it may already be someone else's key too."""
    path = Path(path)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read private key {path}: {exc.strerror}") from None
    if st.st_mode & 0o077:
        raise SpecError(
            f"private key {path} is readable or writable by others (mode "
            f"{st.st_mode & 0o777:04o}); allowed: 0600 (chmod 600 {path})"
        )
    return SigningKey.from_pem(data, passphrase=passphrase, source=f"private key {path}")


def load_public_key(path_or_pem: str | os.PathLike[str] | bytes) -> PublicKey:
    if isinstance(path_or_pem, bytes):
        return PublicKey.from_pem(path_or_pem)
    text = os.fspath(path_or_pem)
    if text.lstrip().startswith("-----BEGIN"):
        return PublicKey.from_pem(text)
    path = Path(text)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read public key {path}: {exc.strerror}") from None
    return PublicKey.from_pem(data, source=f"public key {path}")


# ------------------------------------------------------------------------------ payloads


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


def canonical_ts(ts: datetime) -> str:
    """One spelling per instant (UTC, microseconds, Z), so equal instants sign equal bytes."""
    if ts.tzinfo is None:
        raise SpecError(f"timestamp {ts!r} has no timezone; allowed: an aware datetime")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


class _Frozen(BaseModel):
    # Strict: no "3" -> 3 coercion, so a payload means exactly what its bytes say.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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


class SignedStatement(_Frozen):
    """A payload, the id of the key that signed it, and the signature (lowercase hex)."""

    payload: SignedPayload
    key_id: str
    signature: str

    @field_validator("key_id")
    @classmethod
    def _kid(cls, v: str) -> str:
        if not _HEX64.match(v):
            raise ValueError("key_id must be 64 lowercase hex characters")
        return v

    @field_validator("signature")
    @classmethod
    def _sig(cls, v: str) -> str:
        # Lowercase hex only: one spelling per signature, so no byte of it is malleable.
        if not _HEX128.match(v):
            raise ValueError("signature must be 128 lowercase hex characters")
        return v

    def to_bytes(self) -> bytes:
        return _canonical_json(self.model_dump(mode="json"))

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


def _parse_envelope(cls: type[BaseModel], data: bytes, what: str) -> Any:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedStatement(f"{what} is not UTF-8 JSON ({_first_line(exc)})") from None
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        raise MalformedStatement(f"{what} is malformed: {_pyd_line(exc)}") from None


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


# ------------------------------------------------------------------------------ anchors


class ChainHead(_Frozen):
    seq: int
    hash: str

    @field_validator("hash")
    @classmethod
    def _h(cls, v: str) -> str:
        if not _HEX64.match(v):
            raise ValueError("hash must be 64 lowercase hex characters")
        return v


class AnchorCheckpoint(_Frozen):
    """Every chain head at one moment; `prev` links checkpoints so one cannot be dropped
    from the sequence unnoticed."""

    v: Literal[1] = 1
    ts: str
    heads: dict[str, ChainHead]
    prev: str | None = None

    @field_validator("ts")
    @classmethod
    def _ts(cls, v: str) -> str:
        if not _TS.match(v):
            raise ValueError("ts must be YYYY-MM-DDTHH:MM:SS.ffffffZ (UTC)")
        return v

    @field_validator("prev")
    @classmethod
    def _prev(cls, v: str | None) -> str | None:
        if v is not None and not _HEX64.match(v):
            raise ValueError("prev must be the sha256 of the previous checkpoint's bytes")
        return v

    def canonical_bytes(self) -> bytes:
        return _ANCHOR_DOMAIN + _canonical_json(self.model_dump(mode="json"))


class SignedAnchor(_Frozen):
    checkpoint: AnchorCheckpoint
    key_id: str
    signature: str

    @field_validator("key_id")
    @classmethod
    def _kid(cls, v: str) -> str:
        if not _HEX64.match(v):
            raise ValueError("key_id must be 64 lowercase hex characters")
        return v

    @field_validator("signature")
    @classmethod
    def _sig(cls, v: str) -> str:
        if not _HEX128.match(v):
            raise ValueError("signature must be 128 lowercase hex characters")
        return v

    def to_bytes(self) -> bytes:
        """What goes to the artifact store; its sha256 is the anchor's address."""
        return _canonical_json(self.model_dump(mode="json"))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedAnchor:
        anchor = _parse_envelope(cls, data, "anchor checkpoint")
        if anchor.to_bytes() != data:
            raise MalformedStatement("anchor checkpoint is not in canonical form")
        return anchor


class AnchorProblem(BaseModel):
    chain: str
    kind: Literal["REWRITTEN", "WENT_BACKWARDS", "MISSING"]
    anchored_seq: int
    current_seq: int | None
    detail: str


def make_anchor(
    heads: Mapping[str, tuple[int, str] | ChainHead],
    key: SigningKey,
    *,
    now: datetime,
    prev: str | None = None,
) -> SignedAnchor:
    """Sign every chain head (chain id -> (seq, hash)) with the service key."""
    cp = AnchorCheckpoint(
        ts=canonical_ts(now),
        heads={
            c: h if isinstance(h, ChainHead) else ChainHead(seq=int(h[0]), hash=str(h[1]))
            for c, h in sorted(heads.items())
        },
        prev=prev,
    )
    sig = key.sign(cp.canonical_bytes())
    return SignedAnchor(checkpoint=cp, key_id=key.key_id, signature=sig.hex())


def check_anchor(
    anchor: SignedAnchor | bytes,
    *,
    service_keys: Iterable[ActorKey],
    current_heads: Mapping[str, tuple[int, str] | ChainHead],
    hash_at: Callable[[str, int], str | None],
) -> list[AnchorProblem]:
    """Compare what was anchored with what the database says now.

    `hash_at(chain, seq)` reads one entry's stored hash: a chain that grew since the anchor
    is checked at the anchored seq, since its head moved on legitimately. The anchor's own
    signature is checked first (ForgedSignature/UnknownKey), and a key counts as valid if it
    was not revoked when the anchor was made. An empty list means every anchored head is
    still there, unchanged. Entries after the anchor are protected by the hash chain only.
    """
    if isinstance(anchor, bytes | bytearray):
        anchor = SignedAnchor.from_bytes(bytes(anchor))
    cp = anchor.checkpoint
    made = _parse_ts(cp.ts)
    key = next((k for k in service_keys if k.key.key_id == anchor.key_id), None)
    if key is None:
        raise UnknownKey(
            f"anchor of {cp.ts} is signed by key {anchor.key_id[:16]}, which is not a "
            "registered service key"
        )
    if key.revoked_by(made):
        raise RevokedKey(
            f"anchor of {cp.ts} is signed by key {anchor.key_id[:16]}, revoked at "
            f"{canonical_ts(key.revoked_at)}"  # type: ignore[arg-type]
        )
    if not key.key.verify(bytes.fromhex(anchor.signature), cp.canonical_bytes()):
        raise ForgedSignature(
            f"anchor of {cp.ts} does not verify against key {anchor.key_id[:16]}: "
            "the checkpoint was altered"
        )
    now_heads = {
        c: h if isinstance(h, ChainHead) else ChainHead(seq=int(h[0]), hash=str(h[1]))
        for c, h in current_heads.items()
    }
    problems: list[AnchorProblem] = []
    for chain, anchored in sorted(cp.heads.items()):
        cur = now_heads.get(chain)
        if cur is None:
            problems.append(
                AnchorProblem(
                    chain=chain,
                    kind="MISSING",
                    anchored_seq=anchored.seq,
                    current_seq=None,
                    detail=f"{chain}: anchored at seq {anchored.seq} on {cp.ts}, "
                    "now absent from the database",
                )
            )
            continue
        if cur.seq < anchored.seq:
            problems.append(
                AnchorProblem(
                    chain=chain,
                    kind="WENT_BACKWARDS",
                    anchored_seq=anchored.seq,
                    current_seq=cur.seq,
                    detail=f"{chain}: anchored at seq {anchored.seq} on {cp.ts}, "
                    f"now ends at seq {cur.seq}: entries were removed",
                )
            )
            continue
        stored = cur.hash if cur.seq == anchored.seq else hash_at(chain, anchored.seq)
        if stored != anchored.hash:
            found = "no entry" if stored is None else f"hash {stored[:16]}"
            problems.append(
                AnchorProblem(
                    chain=chain,
                    kind="REWRITTEN",
                    anchored_seq=anchored.seq,
                    current_seq=cur.seq,
                    detail=f"{chain}: seq {anchored.seq} was anchored with hash "
                    f"{anchored.hash[:16]} on {cp.ts}, the database now has {found}: "
                    "the chain was rewritten",
                )
            )
    return problems


# ------------------------------------------------------------------------------ helpers


def _span(d: timedelta) -> str:
    s = int(abs(d.total_seconds()))
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{s}s"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _pyd_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ())) or "statement"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{loc}: {msg}{more}"


def measure_verification_cost(n: int = 2000, *, seed_actor: str = "bench-approver") -> dict:
    """Signature verification cost per approval, against raw Ed25519 in the same process.

    Per approval = parse the canonical bytes, resolve the key, verify, check subject, nonce,
    epoch and window: what the registry pays on every signed transition. The baseline is a
    bare Ed25519 verify of the same bytes, so the ratio is the envelope's overhead.
    """
    key = generate_signing_key()
    keys = [ActorKey(actor=seed_actor, key=key.public_key)]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    blobs = [
        sign_statement(
            key,
            kind=SignedKind.approval,
            signer=seed_actor,
            epoch=7,
            now=now,
            model="bench-model",
            version=3,
            slice="global",
            target_state="CANARY",
        ).to_bytes()
        for _ in range(n)
    ]
    seen: set[str] = set()
    expect = Expected(kind=SignedKind.approval, model="bench-model", version=3, slice="global")
    samples: list[float] = []
    for b in blobs:
        t0 = time.perf_counter()
        p = verify_statement(
            b,
            keys=keys,
            now=now,
            current_epoch=7,
            nonce_seen=seen.__contains__,
            acting_actor="bench-deployer",
            expect=expect,
        )
        samples.append(time.perf_counter() - t0)
        seen.add(p.nonce)
    pairs = [(SignedStatement.from_bytes(b), b) for b in blobs[: min(n, 500)]]
    raw = [(bytes.fromhex(s.signature), s.payload.canonical_bytes()) for s, _ in pairs]
    base: list[float] = []
    for sig, msg in raw:
        t0 = time.perf_counter()
        key.public_key.verify(sig, msg)
        base.append(time.perf_counter() - t0)
    samples.sort()
    base.sort()
    med = samples[len(samples) // 2]
    bmed = base[len(base) // 2]
    return {
        "approvals": n,
        "verify_per_approval_p50_us": round(med * 1e6, 1),
        "verify_per_approval_p99_us": round(samples[int(len(samples) * 0.99)] * 1e6, 1),
        "raw_ed25519_verify_p50_us": round(bmed * 1e6, 1),
        "overhead_ratio_vs_raw": round(med / bmed, 2),
        "approvals_per_s": round(1 / med),
    }
