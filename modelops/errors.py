"""Typed errors. The CLI maps every ModelopsError to exit code 1 and one line.

Each message names what was wrong and what is allowed, so the one line is enough.
"""

from __future__ import annotations

__all__ = [
    "ModelopsError",
    "BackendUnavailable",
    "ModelLoadError",
    "SpecError",
    "NotFoundError",
    "IllegalTransition",
    "ApprovalRequired",
    "ABTooEarly",
    "LayerFull",
    "ConflictError",
    "PinnedError",
    "IntegrityError",
    "SchemaOutOfDate",
    "AuditTamperedError",
    "SignatureRefused",
    "StateStoreUnavailable",
]


class ModelopsError(Exception):
    """Base of every error a user can cause; never a bug."""


class SpecError(ModelopsError):
    """A spec, YAML file or argument does not validate."""


class NotFoundError(ModelopsError):
    """An unknown model, version, dataset, contract or slice."""


class IllegalTransition(ModelopsError):
    """The lifecycle or tier rules do not allow this move."""


class ApprovalRequired(IllegalTransition):
    """A gated transition lacks the approvals its tier demands."""


class ABTooEarly(IllegalTransition):
    """An L2/L3 A/B test is promoted before its minimum duration and without a conclusion."""


class LayerFull(IllegalTransition):
    """An A/B test would over-allocate its orthogonal layer's capacity."""


class ConflictError(ModelopsError):
    """A compare-and-set lost: the state is not what the caller expected."""


class PinnedError(ModelopsError):
    """A dataset version is still referenced by a non-archived model version."""


class IntegrityError(ModelopsError):
    """Content does not match its sha256; it is never handed out."""


class BackendUnavailable(ModelopsError):
    """A serving backend cannot be reached or is not ready; callers retry or answer 503."""


class ModelLoadError(ModelopsError):
    """A backend tried to load a model and failed; the message carries its reason."""


class SchemaOutOfDate(ModelopsError):
    """The registry database is behind the code's migrations."""


class AuditTamperedError(ModelopsError):
    """The audit hash chain does not verify."""


class SignatureRefused(ModelopsError):
    """A signed statement is refused; subclasses in modelops.identity name why."""

    reason = "refused"


class StateStoreUnavailable(ModelopsError):
    """A declared externalized state store cannot be reached; nothing was snapshotted."""
