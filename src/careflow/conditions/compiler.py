"""Conditions compiled once into Python functions; evaluation is a pure function of the context.

The compiled form must agree with ``interpreter.evaluate`` on every valid condition (a
property test checks it); it is the fast path, the interpreter the readable reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careflow.conditions.codegen import Predicate, generate
from careflow.conditions.language import ConditionError, NamedFields, validate_condition


class CompiledCondition:
    """A validated condition as one generated function: call it, or ask why it failed.

    Hot loops may call ``.predicate`` directly to save a frame.
    """

    __slots__ = ("_entries", "named", "predicate", "source")

    def __init__(self, source: Mapping[str, Any], named: NamedFields) -> None:
        self.source = source
        self.named = named
        self.predicate: Predicate = generate(source, named)
        self._entries: tuple[tuple[str, Predicate], ...] | None = None

    def __call__(self, context: Mapping[str, Any]) -> bool:
        return self.predicate(context)

    def failed_entries(self, context: Mapping[str, Any]) -> list[str]:
        """The top-level keys whose matchers fail for ``context`` (in the rule's order)."""
        if self._entries is None:
            # Compiled on first use only: explaining is rarer than evaluating.
            self._entries = tuple((k, generate({k: m}, self.named)) for k, m in self.source.items())
        return [key for key, pred in self._entries if not pred(context)]


def compile_condition(
    condition: Mapping[str, Any] | None, *, named_fields: NamedFields | None = None
) -> CompiledCondition:
    """Validate and compile; raises ``ConditionError`` on a malformed condition."""
    condition = {} if condition is None else condition
    named = named_fields or {}
    errors = validate_condition(condition, named_fields=named)
    if errors:
        raise ConditionError(errors)
    return CompiledCondition(condition, named)
