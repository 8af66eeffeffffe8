"""Syntax and validation of conditions; the shared primitives of compiler and interpreter."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

OPERATORS = frozenset(
    {"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "exists", "starts_with"}
)
# How deep the compiler follows a condition: a guard for conditions stored by any means.
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


# What a saved rule may hold: levels of nesting (the top object is level 1, each
# ``all``/``any``/``not`` adds one) and entries (keys of every condition object, together).
SAVED_MAX_DEPTH = 8
SAVED_MAX_ENTRIES = 100


@dataclass(frozen=True, slots=True)
class SaveChecks:
    """The checks of a condition being saved on a rule, beyond its syntax.

    ``entities``: the entities the rule's trigger puts in the context; a path must start
    with one of them (or be a named field). None when the trigger is unknown (a problem
    reported on its own). The depth and entry bounds keep a rule readable and its
    evaluation cheap.
    """

    entities: Collection[str] | None
    max_depth: int = SAVED_MAX_DEPTH
    max_entries: int = SAVED_MAX_ENTRIES


def validate_condition(
    condition: Any,
    *,
    named_fields: NamedFields | None = None,
    prefix: str = "conditions",
    saving: SaveChecks | None = None,
) -> list[dict[str, str]]:
    """Every problem in ``condition`` as ``{"field", "message"}``; empty when it is valid.

    With ``saving``, also the checks of a condition a rule is saved with (``SaveChecks``).
    """
    errors: list[dict[str, str]] = []
    walk = _Walk(named_fields or {}, saving, errors)
    walk.object(condition, prefix, 1)
    if saving is not None and walk.entries > saving.max_entries:
        errors.append(
            {
                "field": prefix,
                "message": f"holds {walk.entries} entries; at most {saving.max_entries}",
            }
        )
    return errors


class _Walk:
    __slots__ = ("entries", "errors", "named", "saving")

    def __init__(
        self, named: NamedFields, saving: SaveChecks | None, errors: list[dict[str, str]]
    ) -> None:
        self.named = named
        self.saving = saving
        self.errors = errors
        self.entries = 0

    def object(self, condition: Any, where: str, level: int) -> None:
        errors = self.errors
        max_depth = self.saving.max_depth if self.saving is not None else MAX_DEPTH + 1
        if level > max_depth:
            errors.append({"field": where, "message": f"nested deeper than {max_depth} levels"})
            return
        if not isinstance(condition, Mapping):
            errors.append({"field": where, "message": "must be an object"})
            return
        self.entries += len(condition)
        for key, matcher in condition.items():
            at = f"{where}.{key}"
            if key in ("all", "any"):
                if not isinstance(matcher, list):
                    errors.append(
                        {"field": at, "message": f"'{key}' takes a list of condition objects"}
                    )
                    continue
                for i, sub in enumerate(matcher):
                    self.object(sub, f"{at}[{i}]", level + 1)
            elif key == "not":
                self.object(matcher, at, level + 1)
            elif not isinstance(key, str) or not (key in self.named or _PATH.match(key)):
                errors.append({"field": at, "message": "not a dotted field path"})
            else:
                if key not in self.named:
                    self._entity(key, at)
                _validate_matcher(matcher, at, errors)

    def _entity(self, path: str, at: str) -> None:
        if self.saving is None or self.saving.entities is None:
            return
        entities = self.saving.entities
        entity = path.partition(".")[0]
        if entity in entities:
            return
        offered = ", ".join(entities) or "nothing"
        if self.named:
            offered += f"; named fields: {', '.join(self.named)}"
        self.errors.append(
            {
                "field": at,
                "message": f"'{entity}' is not in this trigger's context, which offers "
                f"{offered}",
            }
        )


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
