"""Argument checks the registry applies before it opens a transaction.

Each turns a caller's spelling into the one the tables hold, or refuses it with a line that
says what is allowed, so a refusal never reaches the database.
"""

from __future__ import annotations

import math
import numbers
import re
from pathlib import Path
from typing import Any

from modelops.errors import IntegrityError, NotFoundError, SpecError
from modelops.spec import DatasetRef, ModelSpec, State, parse_name_version

from .records import canonical

__all__ = [
    "actor_name",
    "team_name",
    "non_finite",
    "check_finite",
    "parse_state",
    "as_ref",
    "check_dataset_hash",
    "unknown_slice",
    "gate_verdict",
]

_ACTOR_RE = re.compile(r"^[a-z0-9][a-z0-9._:@+-]{0,255}$")
_TEAM_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")


def actor_name(text: str | None) -> str:
    """The one spelling of an actor: trimmed, lowercase, ASCII.

    The self-approval rule compares names, so `ALICE` must be `alice`; ASCII only, so a
    look-alike letter from another script cannot make a second name for the same person.
    """
    name = (text or "").strip().lower()
    if not name:
        raise SpecError("an actor is required: say who is doing this (--actor NAME)")
    if not _ACTOR_RE.match(name):
        raise SpecError(
            f"actor {text!r} is not allowed; allowed: lowercase letters, digits and . _ - : @ +, "
            "starting with a letter or digit, at most 256 characters"
        )
    return name


def team_name(text: str | None) -> str:
    """The one spelling of a team: trimmed and lowercase, as a model's owner_team is."""
    name = (text or "").strip().lower()
    if not name:
        raise SpecError("a team is required: name one (--team TEAM)")
    if not _TEAM_RE.match(name):
        raise SpecError(
            f"team {text!r} is not allowed; allowed: lowercase letters, digits and . _ -, "
            "starting with a letter or digit, at most 128 characters"
        )
    return name


def non_finite(value: Any, path: str = "") -> tuple[str, float] | None:
    """The first NaN or infinity in a JSON-like value, with its key path (`slo.p99_ms`,
    `gates[1].value`), or None."""
    if isinstance(value, dict):
        for k, v in value.items():
            if found := non_finite(v, f"{path}.{k}" if path else str(k)):
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if found := non_finite(v, f"{path}[{i}]"):
                return found
    elif isinstance(value, numbers.Real) and not math.isfinite(float(value)):
        return path or "value", float(value)
    return None


def check_finite(results: dict[str, Any]) -> None:
    """NaN and infinities are not measurements; a gate that produced one measured nothing."""
    if found := non_finite(results):
        raise SpecError(
            f"gate results: {found[0]} is {found[1]}, not a finite number; allowed: finite numbers"
        )


def parse_state(value: State | str) -> State:
    if isinstance(value, State):
        return value
    try:
        return State(str(value).upper())
    except ValueError:
        raise SpecError(
            f"unknown state {value!r}; allowed: {', '.join(s.value for s in State)}"
        ) from None


def as_ref(value: str | DatasetRef, what: str) -> DatasetRef:
    if isinstance(value, DatasetRef):
        return value
    name, ver = parse_name_version(value, what)
    return DatasetRef(name=name, version=ver)


def check_dataset_hash(uri: str, content_hash: str | None) -> str | None:
    """For a local file, hash it: a stated hash must match, a missing one is filled in."""
    from modelops.artifacts import sha256_file

    if content_hash is not None:
        content_hash = content_hash.lower()
        if len(content_hash) != 64 or any(c not in "0123456789abcdef" for c in content_hash):
            raise SpecError(f"--hash {content_hash!r} is not a sha256 (64 hex characters)")
    path = (
        Path(uri.removeprefix("file://")) if "://" not in uri or uri.startswith("file://") else None
    )
    if path is not None and path.is_file():
        actual = sha256_file(path)
        if content_hash is not None and actual != content_hash:
            raise IntegrityError(
                f"dataset file {path} has sha256 {actual}, not the stated {content_hash}"
            )
        return actual
    return content_hash


def check_dataset_args(kind: str, version: int) -> None:
    if kind not in ("dataset", "eval_set"):
        raise SpecError(f"dataset kind {kind!r} is not allowed; allowed: dataset, eval_set")
    if version < 1:
        raise SpecError(f"dataset version {version} is not allowed; versions start at 1")


def unknown_slice(spec: ModelSpec, slice_: str) -> NotFoundError:
    return NotFoundError(
        f"unknown slice {slice_!r} for model {spec.model_id!r}; allowed: {', '.join(spec.slices)}"
    )


def gate_verdict(passed: bool, results: dict[str, Any]) -> str:
    text = canonical(results)
    return f"{'passed' if passed else 'failed'} {text if len(text) <= 400 else text[:400] + '…'}"
