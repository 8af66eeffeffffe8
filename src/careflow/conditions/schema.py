"""The condition language as JSON Schema (OpenAPI 3.1 components), for the API document.

The shapes here are the ones ``language.validate_condition`` accepts, written as a recursive
schema: ``Condition`` (an object of path → matcher, with ``all``/``any``/``not``), its
pathway-rule variant ``PathwayCondition``, ``ConditionMatcher`` and ``ConditionOperators``. ``$ref``\\s point at
``#/components/schemas/<name>``.
"""

from __future__ import annotations

from typing import Any

from careflow.conditions.language import _PATH

_REF = "#/components/schemas/"
# A value a scalar matcher or an operator compares with (null never matches).
_SCALAR: dict[str, Any] = {"type": ["string", "number", "boolean"]}
_SCALARS: dict[str, Any] = {"type": "array", "items": _SCALAR}
_ORDERED: dict[str, Any] = {"type": ["number", "string"]}


# Pathway rules: a dotted path (with at least one dot), or the trigger's named fields.
_DOTTED = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)+$"
_DESCRIPTION = (
    "The AND of its entries; `{}` always matches. Each key is a dotted path into the event's "
    "context (`appointment.type`, `patient.tags`) and each value a matcher: a scalar (equals; "
    "a list field contains it), a list (one of them; a list field shares an element) or an "
    "object of operators. `all` and `any` take a list of conditions, `not` one. A missing "
    'field fails every matcher except `{"exists": false}`, `ne` and `not_in`.'
)
_EXAMPLES = [
    {"appointment.type": "video"},
    {
        "any": [
            {"appointment.type": ["video", "phone"]},
            {"patient.tags": {"contains": "vip"}},
        ],
        "not": {"patient.email": {"exists": False}},
    },
]


def _condition(name: str, keys: dict[str, Any], description: str) -> dict[str, Any]:
    condition = {"$ref": f"{_REF}{name}"}
    return {
        "title": name,
        "type": "object",
        "description": description,
        "properties": {
            "all": {"type": "array", "items": condition, "description": "Every one matches"},
            "any": {"type": "array", "items": condition, "description": "One at least matches"},
            "not": {**condition, "description": "The condition does not match"},
        },
        "propertyNames": keys,
        "additionalProperties": {"$ref": f"{_REF}ConditionMatcher"},
        "examples": _EXAMPLES,
    }


def condition_schemas() -> dict[str, dict[str, Any]]:
    """The components that describe a condition, by name: ``Condition`` (automation rules)
    and ``PathwayCondition`` (pathway rules). A pathway rule's keys may also be its trigger
    type's named fields, which differ by trigger type: the description names them, the
    pattern (dotted paths) does not."""
    pathway_keys: dict[str, Any] = {"pattern": _DOTTED}
    return {
        "Condition": _condition("Condition", {"pattern": _PATH.pattern}, _DESCRIPTION),
        "PathwayCondition": _condition(
            "PathwayCondition",
            pathway_keys,
            _DESCRIPTION + " A key may also be a named condition field of the rule's trigger type "
            "(`appointment_type_ids`, `invoice_types`, … in `GET /v1/pathway-triggers`).",
        ),
        "ConditionMatcher": {
            "title": "ConditionMatcher",
            "description": "A scalar (equals), a list (one of) or an object of operators",
            "anyOf": [_SCALAR, _SCALARS, {"$ref": f"{_REF}ConditionOperators"}],
        },
        "ConditionOperators": {
            "title": "ConditionOperators",
            "type": "object",
            "description": "Every operator given must hold",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "eq": {**_SCALAR, "description": "Equals"},
                "ne": {**_SCALAR, "description": "Differs (a missing field differs)"},
                "in": {**_SCALARS, "description": "One of"},
                "not_in": {**_SCALARS, "description": "None of (a missing field is none)"},
                "gt": {**_ORDERED, "description": "Greater than (numbers, or strings)"},
                "gte": {**_ORDERED, "description": "At least"},
                "lt": {**_ORDERED, "description": "Less than"},
                "lte": {**_ORDERED, "description": "At most"},
                "contains": {**_SCALAR, "description": "The list field holds it"},
                "exists": {"type": "boolean", "description": "The field is present, not null"},
                "starts_with": {"type": "string", "description": "The string field's prefix"},
            },
            "examples": [{"gte": 18}, {"exists": False}],
        },
    }
