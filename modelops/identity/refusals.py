"""One typed refusal per reason, because "refused" alone does not tell an operator whether
to re-sign, rotate a key or call security."""

from __future__ import annotations

from modelops.errors import SignatureRefused

__all__ = [
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
]


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


class UnsignedStatement(SignatureRefused):
    """An approval, override, amendment, break-glass or unlock that carries no signature."""

    reason = "unsigned"
