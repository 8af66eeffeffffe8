"""Syntax and validation of conditions; the shared primitives of compiler and interpreter."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

OPERATORS = frozenset(
    {"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists", "starts_with"}
)
MAX_DEPTH = 16

# A named field is an alias for a dotted path (pathway triggers' `appointment_type_ids` →
# `appointment.appointment_type_id`); its matcher has the same meaning as on the path.
NamedFields = Mapping[str, str]

_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class ConditionError(ValueError):
    """A malformed condition; ``errors`` holds ``{"field", "message"}`` for each problem."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


def resolve_path(context: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or MISSING when any step is absent or null."""
    value: Any = context
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
        else:
            return MISSING
        if value is None or value is MISSING:
            return MISSING
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def scalar_equal(a: Any, b: Any) -> bool:
    # JSON's true is not 1: keep booleans apart from numbers.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return bool(a == b)
    return type(a) is type(b) and a == b


def ordered(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` can be compared: two numbers, or two strings."""
    return (is_number(a) and is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def validate_condition(
    condition: Any, *, named_fields: NamedFields | None = None, prefix: str = "conditions"
) -> list[dict[str, str]]:
    """Every problem in ``condition`` as ``{"field", "message"}``; empty when it is valid."""
    errors: list[dict[str, str]] = []
    _validate_object(condition, named_fields or {}, prefix, errors, 0)
    return errors


def _validate_object(
    condition: Any, named: NamedFields, where: str, errors: list[dict[str, str]], depth: int
) -> None:
    if depth > MAX_DEPTH:
        errors.append({"field": where, "message": f"nested deeper than {MAX_DEPTH} levels"})
        return
    if not isinstance(condition, Mapping):
        errors.append({"field": where, "message": "must be an object"})
        return
    for key, matcher in condition.items():
        at = f"{where}.{key}"
        if key in ("all", "any"):
            if not isinstance(matcher, list):
                errors.append(
                    {"field": at, "message": f"'{key}' takes a list of condition objects"}
                )
                continue
            for i, sub in enumerate(matcher):
                _validate_object(sub, named, f"{at}[{i}]", errors, depth + 1)
        elif key == "not":
            _validate_object(matcher, named, at, errors, depth + 1)
        elif not isinstance(key, str) or not (key in named or _PATH.match(key)):
            errors.append({"field": at, "message": "not a dotted field path"})
        else:
            _validate_matcher(matcher, at, errors)


def _validate_matcher(matcher: Any, at: str, errors: list[dict[str, str]]) -> None:
    if is_scalar(matcher):
        if matcher is None:
            errors.append({"field": at, "message": 'null never matches; use {"exists": false}'})
        return
    if isinstance(matcher, list):
        if not all(is_scalar(v) and v is not None for v in matcher):
            errors.append({"field": at, "message": "a list matcher holds scalars only"})
        return
    if not isinstance(matcher, Mapping):
        errors.append(
            {"field": at, "message": "a matcher is a scalar, a list or an operator object"}
        )
        return
    if not matcher:
        errors.append({"field": at, "message": "an operator object needs at least one operator"})
        return
    for op, operand in matcher.items():
        op_at = f"{at}.{op}"
        if op not in OPERATORS:
            errors.append(
                {
                    "field": op_at,
                    "message": f"unknown operator; one of {', '.join(sorted(OPERATORS))}",
                }
            )
        elif op == "exists":
            if not isinstance(operand, bool):
                errors.append({"field": op_at, "message": "'exists' takes true or false"})
        elif op in ("in", "not_in"):
            if not isinstance(operand, list) or not all(
                is_scalar(v) and v is not None for v in operand
            ):
                errors.append({"field": op_at, "message": f"'{op}' takes a list of scalars"})
        elif op in ("gt", "gte", "lt", "lte"):
            if not (is_number(operand) or isinstance(operand, str)):
                errors.append({"field": op_at, "message": f"'{op}' takes a number or a string"})
        elif op == "starts_with":
            if not isinstance(operand, str):
                errors.append({"field": op_at, "message": "'starts_with' takes a string"})
        elif not is_scalar(operand) or operand is None:
            errors.append({"field": op_at, "message": f"'{op}' takes a scalar"})
