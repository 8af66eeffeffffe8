"""Why a rule's conditions matched an event's context or not, entry by entry, for people.

Each entry's verdict is the interpreter's own (``conditions.interpreter.evaluate`` on that
entry alone), so the explanation and the engine cannot disagree; this module only walks
the condition's shape and reads the value each path names. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from careflow.conditions import ConditionError, evaluate, resolve_path
from careflow.conditions.language import MAX_DEPTH, MISSING


@dataclass(frozen=True, slots=True)
class Check:
    """One entry of a condition: a path and its matcher, or a group (all / any / not)."""

    label: str  # the path, or "all of", "any of", "not"
    matched: bool
    matcher: Any = None  # for a path: what it was matched against
    value: Any = None  # for a path: the value in the context (None if absent)
    present: bool = True  # for a path: whether the context holds a value there
    children: list[Check] = field(default_factory=list)


def explain(condition: Mapping[str, Any] | None, context: Mapping[str, Any]) -> list[Check]:
    """The checks of ``condition`` against ``context``, in the condition's order.

    ``{}`` (or None) always matches and has no checks. A malformed condition raises
    ``ConditionError``, as evaluating it would.
    """
    return _entries(condition or {}, context, 0)


def matched(checks: list[Check]) -> bool:
    """Whether the whole condition matched: every top-level entry did."""
    return all(check.matched for check in checks)


def _verdict(entry: Mapping[str, Any], context: Mapping[str, Any]) -> bool:
    try:
        return evaluate(entry, context)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConditionError([{"field": "conditions", "message": str(exc)}]) from None


def _entries(condition: Mapping[str, Any], context: Mapping[str, Any], depth: int) -> list[Check]:
    if depth > MAX_DEPTH:
        raise ConditionError([{"field": "conditions", "message": "nested too deeply"}])
    if not isinstance(condition, Mapping):
        raise ConditionError([{"field": "conditions", "message": "must be an object"}])
    checks: list[Check] = []
    for key, matcher in condition.items():
        ok = _verdict({key: matcher}, context)
        if key in ("all", "any"):
            children = [
                Check(
                    label=f"condition {i + 1}",
                    matched=_verdict(sub, context),
                    children=_entries(sub, context, depth + 1),
                )
                for i, sub in enumerate(matcher)
            ]
            label = "all of" if key == "all" else "any of"
            checks.append(Check(label=label, matched=ok, children=children))
        elif key == "not":
            children = _entries(matcher, context, depth + 1)
            checks.append(Check(label="not", matched=ok, children=children))
        else:
            value = resolve_path(context, key)
            present = value is not MISSING
            checks.append(
                Check(
                    label=key,
                    matched=ok,
                    matcher=matcher,
                    value=value if present else None,
                    present=present,
                )
            )
    return checks
