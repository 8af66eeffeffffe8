"""The reasons the resolve explainer gives for a pathway rule that did not match (pure)."""

from __future__ import annotations

from careflow.conditions import compile_condition
from careflow.pathways.catalog import TRIGGERS
from careflow.pathways.explanation import failed_conditions

NAMED = TRIGGERS["appointment.booked"].named_fields


def _reasons(conditions: dict, context: dict) -> list[str]:
    failed = compile_condition(conditions, named_fields=NAMED).failed_entries(context)
    return [f.reason for f in failed_conditions(conditions, failed, NAMED, context)]


class TestFailedConditions:
    def test_a_named_field_reads_its_path_and_shows_the_value_and_the_expectation(self) -> None:
        context = {"appointment": {"appointment_type_id": "t_1", "type": "video"}}
        conditions = {"appointment_type_ids": ["vip"], "appointment_types": ["video"]}
        failed = compile_condition(conditions, named_fields=NAMED).failed_entries(context)
        [reason] = failed_conditions(conditions, failed, NAMED, context)
        assert reason.key == "appointment_type_ids"
        assert reason.path == "appointment.appointment_type_id"
        assert reason.present and reason.actual == "t_1"
        assert reason.expected == ["vip"]
        assert reason.reason == 'appointment.appointment_type_id is "t_1"; expected one of ["vip"]'

    def test_an_absent_value_operators_and_scalars(self) -> None:
        context = {"appointment": {"duration": 30}, "patient": {"tags": ["new"]}}
        assert _reasons(
            {
                "appointment.type": "video",
                "appointment.duration": {"gte": 45, "lt": 90},
                "patient.tags": "vip",
            },
            context,
        ) == [
            'the event has no appointment.type; expected "video"',
            "appointment.duration is 30; expected gte 45 and lt 90",
            'patient.tags is ["new"]; expected "vip"',
        ]

    def test_groups_say_which_kind_of_group_failed(self) -> None:
        context = {"appointment": {"type": "video"}}
        assert _reasons(
            {
                "any": [{"appointment.type": "phone"}, {"appointment.type": "in_person"}],
                "not": {"appointment.type": "video"},
                "all": [{"appointment.type": "video"}, {"appointment.status": "booked"}],
            },
            context,
        ) == [
            "none of the conditions in any holds",
            "the condition inside not holds",
            "one of the conditions in all does not hold",
        ]

    def test_a_rule_that_matched_has_no_reasons(self) -> None:
        context = {"appointment": {"type": "video"}}
        assert _reasons({"appointment_types": ["video"]}, context) == []
        assert failed_conditions(None, [], NAMED, context) == []
