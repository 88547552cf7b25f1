"""Argument types and CliParser: what a value typed on the command line may be.

Serving's plugin commands use these too, so every subcommand validates the same way.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from modelops.errors import SpecError
from modelops.spec import MAX_VERSION

__all__ = [
    "CliParser",
    "bounded_int",
    "port",
    "seconds",
    "json_object",
    "database_url",
]

# ---------------------------------------------------------------------- argument types
#
# A well-formed value that is not allowed (a version no column can hold, a port past 65535,
# a blank name, JSON that does not parse) is a user mistake: these types raise SpecError,
# which argparse does not catch, so main() prints one `error:` line and exits 1. Input that
# is not even of the right kind (`--version one`) stays argparse's usage error, exit 2.


def bounded_int(label: str, lo: int = 0, hi: int = MAX_VERSION) -> Callable[[str], int]:
    """An int in lo..hi; the default is what a database integer column holds."""

    def parse(text: str) -> int:
        value = int(text)  # ValueError: argparse's "invalid int value", a usage error
        if not lo <= value <= hi:
            raise SpecError(f"{label} {text}: out of range; allowed: {lo}..{hi}")
        return value

    parse.__name__ = "int"  # argparse names the type in its usage error
    return parse


def port(label: str) -> Callable[[str], int]:
    """A TCP port to listen on; 0 asks the OS for a free one."""
    return bounded_int(label, 0, 65535)


def _finite(label: str, text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise SpecError(f"{label} {text}: not a finite number")
    return value


def seconds(label: str, *, zero: bool = False) -> Callable[[str], float]:
    """A duration: finite, and positive (or zero where `zero` allows it)."""

    def parse(text: str) -> float:
        value = _finite(label, text)
        if value < 0 or (value == 0 and not zero):
            raise SpecError(f"{label} {text}: allowed: {'0 or more' if zero else 'more than 0'}")
        return value

    parse.__name__ = "float"
    return parse


def json_object(label: str) -> Callable[[str], dict[str, Any]]:
    """A JSON object of finite numbers (NaN, Infinity and 1e400 are not measurements)."""
    example = "e.g. '{\"auc\": 0.81}'"

    def parse(text: str) -> dict[str, Any]:
        from modelops.registry import non_finite

        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(
                f"{label} is not JSON ({exc.msg} at character {exc.pos}); "
                f"allowed: a JSON object, {example}"
            ) from None
        if not isinstance(value, dict):
            raise SpecError(f"{label} must be a JSON object, {example}")
        if found := non_finite(value):  # NaN, Infinity, or a number too large, like 1e400
            path, number = found
            spelled = "NaN" if math.isnan(number) else ("-" if number < 0 else "") + "Infinity"
            raise SpecError(
                f"{label}: {path} is {spelled}, not a finite number; allowed: finite numbers"
            )
        return value

    return parse


def database_url(what: str) -> Callable[[str], str]:
    """A registry or prediction-log URL, checked for its form when parsed; errors say which."""

    def parse(text: str) -> str:
        from modelops.store.db import resolve_url

        resolve_url(text, what=what)
        return text

    return parse


def _nonblank(label: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.strip():
            raise SpecError(f"{label} is blank; allowed: a non-empty value")
        return text

    parse.__name__ = "str"
    return parse


class CliParser(argparse.ArgumentParser):
    """ArgumentParser whose arguments validate by default, in every subcommand (plugins too).

    A string argument may not be blank, and an int must fit a database integer (a version
    or --parent counts from 1) unless the argument declares its own type.
    """

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if kwargs.get("action") in (None, "store", "append") and not kwargs.get("choices"):
            label = _arg_label(args, kwargs)
            kind = kwargs.get("type")
            if kind is None:
                kwargs["type"] = _nonblank(label)
            elif kind is int:
                dest = kwargs.get("dest") or label.lstrip("-").replace("-", "_").lower()
                versionish = dest in ("version", "parent") or dest.endswith("_version")
                kwargs["type"] = bounded_int(label, 1 if versionish else 0)
            elif kind is float:
                kwargs["type"] = _finite_type(label)
        return super().add_argument(*args, **kwargs)


def _finite_type(label: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        return _finite(label, text)

    parse.__name__ = "float"
    return parse


def _arg_label(args: Sequence[str], kwargs: dict[str, Any]) -> str:
    """How a user spelled the argument: its long option, or a positional's metavar."""
    longs = [a for a in args if a.startswith("--")]
    if longs:
        return longs[0]
    if args and args[0].startswith("-"):
        return args[0]
    meta = kwargs.get("metavar")
    return meta if isinstance(meta, str) else str(args[0] if args else "value").upper()
