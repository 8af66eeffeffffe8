"""Conditions compiled once into closures; evaluation is a pure function of the context.

The compiler must agree with ``interpreter.evaluate`` on every valid condition (a property
test checks it); it is the fast path, the interpreter the readable reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from careflow.conditions.language import (
    MISSING,
    ConditionError,
    NamedFields,
    is_number,
    ordered,
    validate_condition,
)

Predicate = Callable[[Mapping[str, Any]], bool]
ValueTest = Callable[[Any], bool]


def _tag(value: Any) -> tuple[str, Any]:
    # Set membership that keeps true apart from 1, as scalar_equal does.
    if isinstance(value, bool):
        return ("b", value)
    if is_number(value):
        return ("n", value)
    return ("s", value)


def _getter(path: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = tuple(path.split("."))
    if len(parts) == 1:
        (only,) = parts

        def get_one(ctx: Mapping[str, Any]) -> Any:
            v = ctx.get(only)
            return MISSING if v is None else v

        return get_one
    if len(parts) == 2:
        first, second = parts

        def get_two(ctx: Mapping[str, Any]) -> Any:
            outer = ctx.get(first)
            if not isinstance(outer, Mapping):
                return MISSING
            v = outer.get(second)
            return MISSING if v is None else v

        return get_two

    def get_many(ctx: Mapping[str, Any]) -> Any:
        v: Any = ctx
        for part in parts:
            if not isinstance(v, Mapping):
                return MISSING
            v = v.get(part)
            if v is None:
                return MISSING
        return v

    return get_many


def _equals_test(expected: Any) -> ValueTest:
    tagged = _tag(expected)

    def test(value: Any) -> bool:
        if value is MISSING:
            return False
        if isinstance(value, list):
            return any(_tag(v) == tagged for v in value if _hashable(v))
        return _hashable(value) and _tag(value) == tagged

    return test


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _one_of_test(options: list[Any]) -> ValueTest:
    allowed = frozenset(_tag(o) for o in options)

    def test(value: Any) -> bool:
        if value is MISSING:
            return False
        if isinstance(value, list):
            return any(_hashable(v) and _tag(v) in allowed for v in value)
        return _hashable(value) and _tag(value) in allowed

    return test


def _operator_test(op: str, operand: Any) -> ValueTest:
    if op == "exists":
        want = bool(operand)
        return lambda v: (v is not MISSING) is want
    if op == "eq":
        return _equals_test(operand)
    if op == "ne":
        eq = _equals_test(operand)
        return lambda v: v is MISSING or not eq(v)
    if op == "in":
        return _one_of_test(operand)
    if op == "not_in":
        one_of = _one_of_test(operand)
        return lambda v: v is MISSING or not one_of(v)
    if op in ("gt", "gte", "lt", "lte"):
        return _comparison(op, operand)
    if op == "contains":
        return _contains(operand)
    if op == "starts_with":
        prefix = operand
        return lambda v: isinstance(v, str) and v.startswith(prefix)
    raise ConditionError([{"field": op, "message": "unknown operator"}])


def _comparison(op: str, operand: Any) -> ValueTest:
    if op == "gt":
        return lambda v: v is not MISSING and ordered(v, operand) and v > operand
    if op == "gte":
        return lambda v: v is not MISSING and ordered(v, operand) and v >= operand
    if op == "lt":
        return lambda v: v is not MISSING and ordered(v, operand) and v < operand
    return lambda v: v is not MISSING and ordered(v, operand) and v <= operand


def _contains(operand: Any) -> ValueTest:
    tagged = _tag(operand)

    def test(value: Any) -> bool:
        if isinstance(value, list):
            return any(_hashable(v) and _tag(v) == tagged for v in value)
        return isinstance(value, str) and isinstance(operand, str) and operand in value

    return test


def _matcher_test(matcher: Any) -> ValueTest:
    if isinstance(matcher, list):
        return _one_of_test(matcher)
    if not isinstance(matcher, Mapping):
        return _equals_test(matcher)
    tests = [_operator_test(op, operand) for op, operand in matcher.items()]
    if len(tests) == 1:
        return tests[0]
    return lambda v: all(t(v) for t in tests)


def _entry(key: str, matcher: Any, named: NamedFields) -> Predicate:
    if key == "all":
        subs = [_object(sub, named) for sub in matcher]
        return lambda ctx: all(p(ctx) for p in subs)
    if key == "any":
        subs = [_object(sub, named) for sub in matcher]
        return lambda ctx: any(p(ctx) for p in subs)
    if key == "not":
        inner = _object(matcher, named)
        return lambda ctx: not inner(ctx)
    get = _getter(named.get(key, key))
    test = _matcher_test(matcher)
    return lambda ctx: test(get(ctx))


def _object(condition: Mapping[str, Any], named: NamedFields) -> Predicate:
    entries = [_entry(k, m, named) for k, m in condition.items()]
    if not entries:
        return lambda ctx: True
    if len(entries) == 1:
        return entries[0]
    return lambda ctx: all(e(ctx) for e in entries)


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A validated condition as closures: call it with a context, or ask why it failed."""

    source: Mapping[str, Any]
    predicate: Predicate
    entries: tuple[tuple[str, Predicate], ...]

    def __call__(self, context: Mapping[str, Any]) -> bool:
        return self.predicate(context)

    def failed_entries(self, context: Mapping[str, Any]) -> list[str]:
        """The top-level keys whose matchers fail for ``context`` (in the rule's order)."""
        return [key for key, pred in self.entries if not pred(context)]


def compile_condition(
    condition: Mapping[str, Any] | None, *, named_fields: NamedFields | None = None
) -> CompiledCondition:
    """Validate and compile; raises ``ConditionError`` on a malformed condition."""
    condition = {} if condition is None else condition
    named = named_fields or {}
    errors = validate_condition(condition, named_fields=named)
    if errors:
        raise ConditionError(errors)
    entries = tuple((k, _entry(k, m, named)) for k, m in condition.items())
    return CompiledCondition(source=condition, predicate=_object(condition, named), entries=entries)
