"""A straightforward recursive interpreter: the reference the compiler is tested against."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careflow.conditions.language import (
    MISSING,
    NamedFields,
    ordered,
    resolve_path,
    scalar_equal,
)


def evaluate(
    condition: Mapping[str, Any],
    context: Mapping[str, Any],
    named_fields: NamedFields | None = None,
) -> bool:
    named = named_fields or {}
    for key, matcher in condition.items():
        if key == "all":
            ok = all(evaluate(sub, context, named) for sub in matcher)
        elif key == "any":
            ok = any(evaluate(sub, context, named) for sub in matcher)
        elif key == "not":
            ok = not evaluate(matcher, context, named)
        else:
            ok = _match(resolve_path(context, named.get(key, key)), matcher)
        if not ok:
            return False
    return True


def _equals(value: Any, expected: Any) -> bool:
    if isinstance(value, list):
        return any(scalar_equal(v, expected) for v in value)
    return scalar_equal(value, expected)


def _one_of(value: Any, options: list[Any]) -> bool:
    return any(_equals(value, option) for option in options)


def _match(value: Any, matcher: Any) -> bool:
    if isinstance(matcher, list):
        return value is not MISSING and _one_of(value, matcher)
    if not isinstance(matcher, Mapping):
        return value is not MISSING and _equals(value, matcher)
    return all(_operator(op, value, operand) for op, operand in matcher.items())


def _operator(op: str, value: Any, operand: Any) -> bool:
    if op == "exists":
        return (value is not MISSING) == operand
    if value is MISSING:
        return op in ("ne", "not_in")
    if op == "eq":
        return _equals(value, operand)
    if op == "ne":
        return not _equals(value, operand)
    if op == "in":
        return _one_of(value, operand)
    if op == "not_in":
        return not _one_of(value, operand)
    if op in ("gt", "gte", "lt", "lte"):
        if not ordered(value, operand):
            return False
        if op == "gt":
            return bool(value > operand)
        if op == "gte":
            return bool(value >= operand)
        if op == "lt":
            return bool(value < operand)
        return bool(value <= operand)
    if op == "contains":
        if isinstance(value, list):
            return any(scalar_equal(v, operand) for v in value)
        return isinstance(value, str) and isinstance(operand, str) and operand in value
    if op == "starts_with":
        return isinstance(value, str) and value.startswith(operand)
    raise ValueError(f"unknown operator {op!r}")
