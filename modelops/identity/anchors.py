"""Anchors: a signed checkpoint of every audit chain head, kept outside the database, so a
rewrite of a whole chain that is internally consistent still differs from what was anchored."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, field_validator

from modelops.identity.canonical import (
    _ANCHOR_DOMAIN,
    _HEX64,
    _TS,
    _canonical_json,
    _Frozen,
    _parse_envelope,
    _parse_ts,
    _SignedEnvelope,
    canonical_ts,
)
from modelops.identity.keys import ActorKey, SigningKey
from modelops.identity.refusals import ForgedSignature, MalformedStatement, RevokedKey, UnknownKey


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


class SignedAnchor(_SignedEnvelope):
    """An anchor checkpoint with its signature; `to_bytes` is what goes to the artifact store,
    and its sha256 is the anchor's address."""

    checkpoint: AnchorCheckpoint

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
