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

Layout: `keys` (Ed25519 keys and their files), `canonical` (one spelling per value: domain
tags, field patterns, timestamps, canonical JSON), `statements` (what a signature covers, and
signing it), `refusals` (one typed error per reason), `verify` (checking a statement now or
as recorded), `anchors` (signed chain-head checkpoints), `cost` (verification cost) and
`wording` (how a refusal line spells durations and validation errors).
"""

from __future__ import annotations

from modelops.identity.anchors import (
    AnchorCheckpoint,
    AnchorProblem,
    ChainHead,
    SignedAnchor,
    check_anchor,
    make_anchor,
)
from modelops.identity.canonical import canonical_ts
from modelops.identity.cost import measure_verification_cost
from modelops.identity.keys import (
    ActorKey,
    PublicKey,
    SigningKey,
    generate_signing_key,
    load_public_key,
    load_signing_key,
    write_keypair,
)
from modelops.identity.refusals import (
    ExpiredSignature,
    ForgedSignature,
    MalformedStatement,
    ReplayedSignature,
    RevokedKey,
    SelfApproval,
    UnknownKey,
    UnsignedStatement,
    WrongEpoch,
    WrongSubject,
)
from modelops.identity.statements import (
    APPROVING_KINDS,
    Expected,
    SignedKind,
    SignedPayload,
    SignedStatement,
    sign_statement,
)
from modelops.identity.verify import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_SKEW,
    reverify_recorded,
    verify_statement,
)

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
    "UnsignedStatement",
    "ChainHead",
    "AnchorCheckpoint",
    "SignedAnchor",
    "AnchorProblem",
    "make_anchor",
    "check_anchor",
    "canonical_ts",
    "measure_verification_cost",
]
