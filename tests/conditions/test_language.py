from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from careflow.conditions import ConditionError, compile_condition, evaluate, validate_condition

CTX: dict[str, Any] = {
    "appointment": {"type": "video", "duration": 30, "appointment_type_id": "type_vip"},
    "patient": {"tags": ["vip", "new"], "email": "p@example.com", "age": 41, "active": True},
    "invoice": {"amount": 120.5},
}


def both(condition: dict[str, Any], context: dict[str, Any] = CTX, named: Any = None) -> bool:
    compiled = compile_condition(condition, named_fields=named)(context)
    assert compiled == evaluate(condition, context, named)
    return compiled


class TestMatchers:
    @pytest.mark.parametrize(
        ("condition", "expected"),
        [
            ({}, True),
            ({"appointment.type": "video"}, True),
            ({"appointment.type": "in_person"}, False),
            ({"patient.tags": "vip"}, True),
            ({"patient.tags": "gold"}, False),
            ({"appointment.type": ["video", "phone"]}, True),
            ({"patient.tags": ["gold", "new"]}, True),
            ({"patient.tags": ["gold"]}, False),
            ({"invoice.amount": {"gt": 100}}, True),
            ({"invoice.amount": {"gte": 120.5, "lt": 121}}, True),
            ({"invoice.amount": {"lte": 100}}, False),
            ({"appointment.duration": {"in": [15, 30]}}, True),
            ({"appointment.duration": {"not_in": [15, 30]}}, False),
            ({"appointment.type": {"ne": "phone"}}, True),
            ({"patient.email": {"contains": "@example"}}, True),
            ({"patient.tags": {"contains": "new"}}, True),
            ({"patient.email": {"starts_with": "p@"}}, True),
            ({"patient.email": {"exists": True}}, True),
            ({"patient.phone": {"exists": False}}, True),
            ({"patient.active": True}, True),
            ({"patient.active": 1}, False),  # JSON true is not 1
            ({"appointment.duration": "30"}, False),  # no coercion between types
        ],
    )
    def test_matcher(self, condition: dict[str, Any], expected: bool) -> None:
        assert both(condition) is expected

    @pytest.mark.parametrize(
        ("matcher", "expected"),
        [
            ("x", False),
            (["x"], False),
            ({"eq": "x"}, False),
            ({"gt": 1}, False),
            ({"contains": "x"}, False),
            ({"starts_with": "x"}, False),
            ({"in": ["x"]}, False),
            ({"exists": True}, False),
            ({"exists": False}, True),
            ({"ne": "x"}, True),
            ({"not_in": ["x"]}, True),
        ],
    )
    def test_missing_field_fails_all_but_three(self, matcher: Any, expected: bool) -> None:
        assert both({"patient.nickname": matcher}) is expected
        assert both({"nothing.here.at.all": matcher}) is expected

    def test_null_is_missing(self) -> None:
        assert both({"patient.phone": {"exists": False}}, {"patient": {"phone": None}})

    def test_combinators(self) -> None:
        assert both({"any": [{"appointment.type": "phone"}, {"patient.tags": "vip"}]})
        assert not both({"all": [{"appointment.type": "video"}, {"patient.tags": "gold"}]})
        assert both({"not": {"appointment.type": "phone"}})
        assert not both({"any": []})
        assert both({"all": []})

    def test_named_fields_alias_a_path(self) -> None:
        named = {"appointment_type_ids": "appointment.appointment_type_id"}
        assert both({"appointment_type_ids": ["type_vip"]}, named=named)
        assert not both({"appointment_type_ids": ["type_basic"]}, named=named)

    def test_failed_entries_name_the_top_level_keys(self) -> None:
        compiled = compile_condition(
            {"appointment.type": "video", "patient.tags": "gold", "invoice.amount": {"gt": 1000}}
        )
        assert compiled.failed_entries(CTX) == ["patient.tags", "invoice.amount"]


class TestValidation:
    @pytest.mark.parametrize(
        ("condition", "field"),
        [
            ([], "conditions"),
            ({"a.b": {"between": [1, 2]}}, "conditions.a.b.between"),
            ({"a.b": {"exists": "yes"}}, "conditions.a.b.exists"),
            ({"a.b": {"in": "x"}}, "conditions.a.b.in"),
            ({"a.b": {"gt": [1]}}, "conditions.a.b.gt"),
            ({"a.b": {}}, "conditions.a.b"),
            ({"a.b": None}, "conditions.a.b"),
            ({"a.b": [{"x": 1}]}, "conditions.a.b"),
            ({"any": {"a": 1}}, "conditions.any"),
            ({"not": [1]}, "conditions.not"),
            ({"all": [{"a": {"nope": 1}}]}, "conditions.all[0].a.nope"),
            ({"bad path!": 1}, "conditions.bad path!"),
            ({"a..b": 1}, "conditions.a..b"),
        ],
    )
    def test_malformed_conditions_name_the_field(self, condition: Any, field: str) -> None:
        errors = validate_condition(condition)
        assert field in [e["field"] for e in errors]
        with pytest.raises(ConditionError):
            compile_condition(condition)

    def test_valid_condition_has_no_errors(self) -> None:
        assert validate_condition({"appointment.type": "video", "any": [{"x": {"gte": 1}}]}) == []


# --- property: the compiler agrees with the interpreter -------------------------------

FIELDS = ["a", "a.b", "a.c", "d", "d.e.f"]
scalars = st.one_of(
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False, allow_infinity=False),
    st.sampled_from(["x", "y", "xy", "yx", ""]),
)
values = st.one_of(scalars, st.none(), st.lists(scalars, max_size=3))


def _context_strategy() -> st.SearchStrategy[dict[str, Any]]:
    leaf = st.dictionaries(st.sampled_from(["b", "c", "f"]), values, max_size=3)
    return st.fixed_dictionaries(
        {},
        optional={
            "a": st.one_of(leaf, values),
            "d": st.one_of(st.fixed_dictionaries({"e": st.one_of(leaf, values)}), values),
        },
    )


ops = st.one_of(
    st.tuples(st.sampled_from(["eq", "ne", "contains"]), scalars),
    st.tuples(
        st.sampled_from(["gt", "gte", "lt", "lte"]),
        st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y"])),
    ),
    st.tuples(st.sampled_from(["in", "not_in"]), st.lists(scalars, max_size=3)),
    st.tuples(st.just("exists"), st.booleans()),
    st.tuples(st.just("starts_with"), st.sampled_from(["x", "y", ""])),
)
matchers = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.lists(ops, min_size=1, max_size=3).map(dict),
)
conditions = st.recursive(
    st.dictionaries(st.sampled_from(FIELDS), matchers, max_size=3),
    lambda inner: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(inner, max_size=3)),
        st.builds(lambda x: {"not": x}, inner),
        st.builds(lambda a, b: {**a, **b}, inner, inner),
    ),
    max_leaves=8,
)


class TestCompilerAgreesWithInterpreter:
    @settings(max_examples=1500, deadline=None)
    @given(condition=conditions, context=_context_strategy())
    def test_same_answer(self, condition: dict[str, Any], context: dict[str, Any]) -> None:
        assert validate_condition(condition) == []
        assert compile_condition(condition)(context) == evaluate(condition, context)


# --- property: the rule index answers as evaluating every rule would ------------------

from careflow.conditions.index import RuleIndex  # noqa: E402

pinning = st.one_of(
    st.dictionaries(
        st.sampled_from(["a", "a.b", "d"]),
        st.one_of(scalars, st.lists(scalars, min_size=1, max_size=3)),
        min_size=1,
        max_size=2,
    ),
    st.builds(lambda k, v: {k: {"eq": v}}, st.sampled_from(["a", "a.b"]), scalars),
    st.builds(
        lambda k, v: {k: {"in": v}},
        st.sampled_from(["a", "a.b"]),
        st.lists(scalars, min_size=1, max_size=3),
    ),
)
rule_sets = st.lists(
    st.one_of(pinning, conditions, st.builds(lambda a, b: {**a, **b}, pinning, conditions)),
    max_size=12,
)


class TestRuleIndex:
    @settings(max_examples=500, deadline=None)
    @given(rules=rule_sets, context=_context_strategy())
    def test_index_matches_exactly_what_every_rule_says(
        self, rules: list[dict[str, Any]], context: dict[str, Any]
    ) -> None:
        index = RuleIndex([compile_condition(r) for r in rules])
        expected = [i for i, r in enumerate(rules) if evaluate(r, context)]
        assert index.matches(context) == expected
        assert index.first_match(context) == (expected[0] if expected else None)

    def test_only_candidates_are_tested(self) -> None:
        rules = [
            {"appointment.type": t, "patient.age": {"gte": n}}
            for t in ("video", "phone")
            for n in range(50)
        ]
        index = RuleIndex([compile_condition(r) for r in rules])
        assert index.path == "appointment.type"
        ctx = {"appointment": {"type": "video"}, "patient": {"age": 10}}
        assert len(index.candidates(ctx)) == 50
        assert index.matches(ctx) == list(range(11))
