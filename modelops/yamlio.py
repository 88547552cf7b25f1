"""YAML files into schema models, with one-line errors.

Users edit these files by hand, so a failure must say which file, which field and
what would have been accepted; a raw validation report says none of that in one line.
"""

from __future__ import annotations

import re
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from modelops.errors import SpecError

__all__ = [
    "format_validation_error",
    "load_yaml_model",
    "read_yaml_mapping",
]

M = TypeVar("M", bound=BaseModel)

_MAX_REPR = 60


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML file whose top level must be a mapping.

    Every failure becomes a SpecError naming the file, so callers never see an
    OSError or a parser exception.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{p}: is a directory; expected a YAML file") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{p}: not UTF-8 text (byte {exc.start}); expected a YAML file") from None
    except OSError as exc:
        raise SpecError(f"{p}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise SpecError(_yaml_syntax_message(p, exc)) from None
    except yaml.YAMLError as exc:
        raise SpecError(_one_line(f"{p}: invalid YAML: {exc}")) from None
    if data is None:
        raise SpecError(f"{p}: empty document; expected a mapping at the top level")
    if not isinstance(data, dict):
        raise SpecError(
            f"{p}: top level is a {_type_name(data)}; expected a mapping at the top level"
        )
    return data


def load_yaml_model(path: str | Path, model_cls: type[M]) -> M:
    """Read a YAML file and validate it as `model_cls`, raising SpecError in one line."""
    data = read_yaml_mapping(path)
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(str(path), exc, model_cls)) from None


def format_validation_error(
    source: str,
    exc: ValidationError,
    model_cls: type[BaseModel] | None = None,
) -> str:
    """Turn the first validation error into `{source}: {field.path[i]}: {problem}`.

    `model_cls` is optional; with it, unknown-field and enum errors can list the
    allowed names, which the validation error itself does not carry.
    """
    errors = exc.errors(include_url=False)
    if not errors:
        return _one_line(f"{source}: {exc}")
    first = errors[0]
    loc = tuple(first.get("loc", ()))
    problem = _describe(first, loc, model_cls)
    where = _format_loc(loc)
    message = f"{source}: {where}: {problem}" if where else f"{source}: {problem}"
    if len(errors) > 1:
        message += f" (+{len(errors) - 1} more)"
    return _one_line(message)


def _yaml_syntax_message(path: Path, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "syntax error"
    if mark is None:
        return _one_line(f"{path}: invalid YAML: {problem}")
    return _one_line(
        f"{path}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    )


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(err: Any, loc: tuple[Any, ...], model_cls: type[BaseModel] | None) -> str:
    kind: str = err.get("type", "")
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    shown = _short_repr(value)

    if kind == "missing":
        return "required field missing"
    if kind == "extra_forbidden":
        allowed = _fields_at(model_cls, loc[:-1])
        if allowed:
            return f"unknown field; allowed fields: {', '.join(allowed)}"
        return "unknown field"
    if kind in ("enum", "literal_error"):
        allowed = _enum_values_at(model_cls, loc) or _parse_expected(ctx.get("expected", ""))
        return f"{shown} is not one of the allowed values; allowed: {', '.join(allowed)}"
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error") or err.get("msg", "invalid value"))
    bounds = {
        "greater_than_equal": (">=", "ge"),
        "greater_than": (">", "gt"),
        "less_than_equal": ("<=", "le"),
        "less_than": ("<", "lt"),
    }
    if kind in bounds:
        op, key = bounds[kind]
        return f"{shown} is out of range; allowed: {op} {ctx.get(key)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{shown} is not an integer; allowed: a whole number"
    if kind in ("float_type", "float_parsing"):
        return f"{shown} is not a number; allowed: a number"
    if kind in ("bool_type", "bool_parsing"):
        return f"{shown} is not a boolean; allowed: true, false"
    if kind == "string_type":
        return f"expected a string, got {_type_name(value)}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"expected a list, got {_type_name(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {_type_name(value)}"
    if kind == "string_too_short":
        return f"{shown} is too short; allowed: at least {ctx.get('min_length')} characters"
    if kind == "string_too_long":
        return f"{shown} is too long; allowed: at most {ctx.get('max_length')} characters"
    if kind == "too_short":
        return f"too few items; allowed: at least {ctx.get('min_length')}"
    if kind == "too_long":
        return f"too many items; allowed: at most {ctx.get('max_length')}"
    if kind == "string_pattern_mismatch":
        return f"{shown} has the wrong form; allowed: strings matching {ctx.get('pattern')}"
    msg = str(err.get("msg", "invalid value"))
    return msg[:1].lower() + msg[1:]


def _parse_expected(expected: str) -> list[str]:
    """Split an "'a', 'b' or 'c'" expectation into names; a fallback when no model is known."""
    if not expected:
        return []
    return [p.strip().strip("'\"") for p in re.split(r", | or ", expected) if p.strip()]


def _annotation_at(model_cls: type[BaseModel] | None, loc: tuple[Any, ...]) -> Any:
    """Follow an error location through the model's annotations; None if lost."""
    current: Any = model_cls
    for part in loc:
        current = _unwrap_optional(current)
        if current is None:
            return None
        if isinstance(part, int):
            args = typing.get_args(current)
            origin = typing.get_origin(current)
            if origin in (list, tuple, set, frozenset) and args:
                current = args[0]
            else:
                return None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = _find_field(current, part)
            if field is None:
                return None
            current = field
        elif typing.get_origin(current) is dict and typing.get_args(current):
            current = typing.get_args(current)[1]
        else:
            return None
    return _unwrap_optional(current)


def _find_field(model_cls: type[BaseModel], name: str) -> Any:
    for field_name, info in model_cls.model_fields.items():
        if name in (field_name, info.alias):
            return info.annotation
    return None


def _unwrap_optional(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else None
    return annotation


def _fields_at(model_cls: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    target = _annotation_at(model_cls, loc)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return [info.alias or name for name, info in target.model_fields.items()]
    return []


def _enum_values_at(model_cls: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    target = _annotation_at(model_cls, loc)
    if isinstance(target, type) and issubclass(target, Enum):
        return [str(member.value) for member in target]
    return []


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())
