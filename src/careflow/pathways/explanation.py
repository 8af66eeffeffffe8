"""Why each pathway rule did or did not match an event: the reasons behind ``/resolve``.

Pure: takes a rule's conditions, the trigger's named fields and the event's context, and
says for each top-level entry that failed which path it read, what it expected and what
the context held. Resolution itself (``resolution.apply_rules``) decides; this only
explains, with the language's own ``resolve_path``, so the two read the same values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from careflow.conditions import resolve_path
from careflow.conditions.language import MISSING

GROUP_REASONS = {
    "all": "one of the conditions in all does not hold",
    "any": "none of the conditions in any holds",
    "not": "the condition inside not holds",
}


@dataclass(frozen=True, slots=True)
class FailedCondition:
    """One top-level entry of a rule's conditions that did not hold for the event."""

    key: str
    path: str | None  # the dotted path it read (a named field's target); None for a group
    expected: Any
    actual: Any  # the value at ``path``; ``None`` with ``present`` False when absent
    present: bool
    reason: str


def failed_conditions(
    conditions: Mapping[str, Any] | None,
    failed_keys: Sequence[str],
    named_fields: Mapping[str, str],
    context: Mapping[str, Any],
) -> list[FailedCondition]:
    """The reason for each key in ``failed_keys`` (as ``CompiledCondition.failed_entries``
    names them), in the rule's order."""
    source = conditions or {}
    reasons: list[FailedCondition] = []
    for key in failed_keys:
        expected = source.get(key)
        if key in GROUP_REASONS:
            reasons.append(FailedCondition(key, None, expected, None, False, GROUP_REASONS[key]))
            continue
        path = named_fields.get(key, key)
        value = resolve_path(context, path)
        wanted = _expectation(expected)
        if value is MISSING:
            reason = f"the event has no {path}; expected {wanted}"
            reasons.append(FailedCondition(key, path, expected, None, False, reason))
        else:
            reason = f"{path} is {_shown(value)}; expected {wanted}"
            reasons.append(FailedCondition(key, path, expected, value, True, reason))
    return reasons


def _shown(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _expectation(matcher: Any) -> str:
    """A matcher in words, as the condition language reads it."""
    if isinstance(matcher, list):
        return f"one of {_shown(matcher)}"
    if isinstance(matcher, Mapping):
        return " and ".join(f"{op} {_shown(operand)}" for op, operand in matcher.items())
    return _shown(matcher)
