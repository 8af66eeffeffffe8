"""The explanation of a rule's conditions: each entry's verdict, the values it read, and a
whole that always agrees with the interpreter."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from careflow.conditions import ConditionError, evaluate
from careflow.executions import explain
from tests.conditions.test_language import _context_strategy, conditions

CONTEXT = {"patient": {"id": 100, "tags": ["vip"], "language": "de"}, "appointment": None}


def test_each_entry_with_its_value_and_verdict() -> None:
    checks = explain.explain(
        {
            "patient.id": {"gte": 1},
            "patient.language": "en",
            "any": [{"patient.tags": "vip"}, {"appointment.type": "video"}],
            "not": {"patient.email": {"exists": True}},
        },
        CONTEXT,
    )
    by_label = {c.label: c for c in checks}
    assert by_label["patient.id"].matched and by_label["patient.id"].value == 100
    language = by_label["patient.language"]
    assert not language.matched and language.value == "de" and language.matcher == "en"
    group = by_label["any of"]
    assert group.matched
    assert [c.matched for c in group.children] == [True, False]
    video = group.children[1].children[0]
    assert video.label == "appointment.type" and not video.present
    negation = by_label["not"]
    assert negation.matched and not negation.children[0].matched
    assert not explain.matched(checks)


def test_no_conditions_match_with_no_checks() -> None:
    assert explain.explain({}, CONTEXT) == []
    assert explain.explain(None, CONTEXT) == []
    assert explain.matched([])


def test_a_malformed_condition_is_a_condition_error() -> None:
    with pytest.raises(ConditionError):
        explain.explain({"patient.id": {"near": 3}}, CONTEXT)


@settings(max_examples=500, deadline=None)
@given(condition=conditions, context=_context_strategy())
def test_the_whole_agrees_with_the_interpreter(
    condition: dict[str, Any], context: dict[str, Any]
) -> None:
    checks = explain.explain(condition, context)
    assert explain.matched(checks) == evaluate(condition, context)
    assert len(checks) == len(condition)
