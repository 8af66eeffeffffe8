"""An index over many rules' conditions, so an event is tested only against rules it can match.

Most rules of a trigger pin one field to a value (``appointment.type: video``,
``appointment_type_ids: [...]``). The index picks the field the most rules pin, files each
of those rules under its values, and for an event evaluates only the rules filed under the
event's value for that field plus the rules that pin nothing there. The answer is exactly
what evaluating every rule would give, in the rules' order (a property test checks it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from careflow.conditions.codegen import Predicate
from careflow.conditions.compiler import CompiledCondition
from careflow.conditions.language import NamedFields, is_number, resolve_path

Tag = tuple[str, Any]


def _tag(value: Any) -> Tag | None:
    if isinstance(value, bool):
        return ("b", value)
    if is_number(value):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None


def _pinned_values(matcher: Any) -> list[Tag] | None:
    """The values a matcher requires the field to equal (one of), or None if it pins nothing.

    Only matchers that fail on a missing field qualify: a rule filed under a value must be
    unable to match an event whose field holds none of its values.
    """
    if isinstance(matcher, Mapping):
        if len(matcher) != 1:
            return None
        ((op, operand),) = matcher.items()
        if op == "eq" or (op == "in" and isinstance(operand, list)):
            matcher = operand
        else:
            return None
    values = matcher if isinstance(matcher, list) else [matcher]
    tags = [_tag(v) for v in values]
    if not tags or any(t is None for t in tags):
        return None
    return [t for t in tags if t is not None]


class RuleIndex:
    """Which of ``conditions`` match a context, testing as few as it can."""

    def __init__(
        self, conditions: Sequence[CompiledCondition], named_fields: NamedFields | None = None
    ) -> None:
        named = dict(named_fields or {})
        self._predicates: list[Predicate] = [c.predicate for c in conditions]
        pins: list[dict[str, list[Tag]]] = []
        for condition in conditions:
            rule_pins: dict[str, list[Tag]] = {}
            for key, matcher in condition.source.items():
                if key in ("all", "any", "not"):
                    continue
                tags = _pinned_values(matcher)
                if tags is not None:
                    rule_pins[named.get(key, key)] = tags
            pins.append(rule_pins)
        counts = Counter(path for rule_pins in pins for path in rule_pins)
        self.path: str | None = counts.most_common(1)[0][0] if counts else None
        self._buckets: dict[Hashable, list[int]] = {}
        self._unpinned: list[int] = []
        for position, rule_pins in enumerate(pins):
            tags = rule_pins.get(self.path) if self.path else None
            if tags is None:
                self._unpinned.append(position)
                continue
            for tag in set(tags):
                self._buckets.setdefault(tag, []).append(position)
        path = self.path
        self._get: Callable[[Mapping[str, Any]], Any] = (
            (lambda ctx: resolve_path(ctx, path)) if path else (lambda ctx: None)
        )

    def __len__(self) -> int:
        return len(self._predicates)

    def candidates(self, context: Mapping[str, Any]) -> list[int]:
        """Positions of the rules that could match, in order."""
        if self.path is None:
            return list(range(len(self._predicates)))
        value = self._get(context)
        values = value if isinstance(value, list) else [value]
        found: list[int] = list(self._unpinned)
        seen_buckets = 0
        for v in values:
            tag = _tag(v)
            bucket = self._buckets.get(tag) if tag is not None else None
            if bucket:
                found.extend(bucket)
                seen_buckets += 1
        if seen_buckets > 1 or (seen_buckets and self._unpinned):
            found = sorted(set(found))
        return found

    def matches(self, context: Mapping[str, Any]) -> list[int]:
        """Positions of every matching rule, in order."""
        predicates = self._predicates
        return [i for i in self.candidates(context) if predicates[i](context)]

    def first_match(self, context: Mapping[str, Any]) -> int | None:
        predicates = self._predicates
        for i in self.candidates(context):
            if predicates[i](context):
                return i
        return None
