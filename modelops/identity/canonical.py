"""One spelling per value, so equal meanings sign equal bytes: domain tags, field patterns,
timestamps, canonical JSON, strict frozen models, and the parser that accepts only those."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from modelops.errors import SpecError
from modelops.identity.refusals import MalformedStatement
from modelops.identity.wording import _first_line, _pyd_line

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


class _SignedEnvelope(_Frozen):
    """What every signed record carries besides its body: the signing key's id and the
    signature, each in one spelling (lowercase hex), so no byte of an envelope is malleable."""

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
        """The canonical bytes (sorted keys): what is stored and hashed."""
        return _canonical_json(self.model_dump(mode="json"))


def _parse_envelope(cls: type[BaseModel], data: bytes, what: str) -> Any:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedStatement(f"{what} is not UTF-8 JSON ({_first_line(exc)})") from None
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        raise MalformedStatement(f"{what} is malformed: {_pyd_line(exc)}") from None
