"""The condition language shared by automation rules and pathway rules (pure, no I/O).

A condition object is the AND of its entries. Each key is a dotted path into the event's
context (or a named field that aliases one) and each value a matcher:

- a scalar: equals (a list field: contains it);
- a list: the value is one of them (a list field: the two share an element);
- an object of operators: ``eq ne in not_in gt gte lt lte contains exists starts_with``.

``all`` and ``any`` take lists of condition objects, ``not`` one. ``{}`` always matches.
A missing (or null) field fails every matcher except ``{"exists": false}``, ``ne`` and
``not_in``.

A rule's conditions are saved only if every path starts with an entity its trigger puts in
the context, nest at most 8 levels and hold at most 100 entries (``SaveChecks``).
"""

from careflow.conditions.compiler import CompiledCondition, compile_condition
from careflow.conditions.interpreter import evaluate
from careflow.conditions.language import (
    OPERATORS,
    ConditionError,
    NamedFields,
    SaveChecks,
    resolve_path,
    validate_condition,
)

__all__ = [
    "OPERATORS",
    "CompiledCondition",
    "ConditionError",
    "NamedFields",
    "SaveChecks",
    "compile_condition",
    "evaluate",
    "resolve_path",
    "validate_condition",
]
