"""The trigger and action catalogs (Automations API reference, SPEC §4 and §5)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.envelopes import body
from tests.conformance.server import Api

SPEC_TRIGGERS = [
    "patient.onboarded",
    "patient.first_login",
    "appointment.booked",
    "appointment.first_booked",
    "appointment.rescheduled",
    "appointment.cancelled",
    "appointment.completed",
    "appointment.before_start",
    "appointment.after_end",
    "form.completed",
    "invoice.overdue",
]


@pytest.fixture(scope="module")
def triggers_response(api: Api) -> Any:
    return api("GET", "/v1/automations/triggers")


@pytest.fixture(scope="module")
def triggers(triggers_response: Any) -> dict[str, dict[str, Any]]:
    return {t.get("event"): t for t in (body(triggers_response) or {}).get("data", [])}


@pytest.fixture(scope="module")
def actions_response(api: Api) -> Any:
    return api("GET", "/v1/automations/actions")


@pytest.fixture(scope="module")
def actions(actions_response: Any) -> dict[str, dict[str, Any]]:
    return {a.get("type"): a for a in (body(actions_response) or {}).get("data", [])}


class TestTriggers:
    def test_triggers_answer_data_envelope(self, triggers_response: Any) -> None:
        r = triggers_response
        assert r.status_code == 200 and set(body(r) or {}) == {"data"}, r.text[:200]

    def test_catalog_has_spec_events(self, triggers: dict[str, Any]) -> None:
        assert all(w in triggers for w in SPEC_TRIGGERS), sorted(triggers)

    def test_trigger_fields(self, triggers: dict[str, Any]) -> None:
        wanted = {"event", "category", "description", "entity_type", "config_schema"}
        assert all(set(t) >= wanted for t in triggers.values())

    def test_patient_onboarded_as_seed(self, triggers: dict[str, Any]) -> None:
        po = triggers.get("patient.onboarded", {})
        assert (
            po.get("category") == "patient_lifecycle"
            and po.get("entity_type") == "patient"
            and po.get("config_schema") is None
        ), po

    def test_patient_first_login_as_seed(self, triggers: dict[str, Any]) -> None:
        fl = triggers.get("patient.first_login", {})
        assert fl.get("config_schema") is None and fl.get("category") == "patient_lifecycle", fl

    def test_before_start_schema_as_seed(self, triggers: dict[str, Any]) -> None:
        bs = triggers.get("appointment.before_start", {})
        hours = (bs.get("config_schema") or {}).get("hours_before", {}) | {"description": None}
        assert (
            bs.get("category") == "appointment_lifecycle"
            and bs.get("entity_type") == "appointment"
            and hours
            == {"type": "integer", "default": 24, "min": 1, "max": 168, "description": None}
        ), bs

    def test_after_end_hours_after(self, triggers: dict[str, Any]) -> None:
        ae = triggers.get("appointment.after_end", {})
        hs = (ae.get("config_schema") or {}).get("hours_after", {})
        assert (
            hs.get("type") == "integer"
            and hs.get("default") == 24
            and hs.get("min") == 1
            and hs.get("max") == 168
        ), ae


class TestActions:
    def test_actions_answer_data_envelope(self, actions_response: Any) -> None:
        r = actions_response
        assert r.status_code == 200 and set(body(r) or {}) == {"data"}, r.text[:200]

    def test_catalog_types(self, actions: dict[str, Any]) -> None:
        assert {"require_form", "send_email", "send_sms", "update_segment"} <= set(actions)

    def test_require_form_as_seed(self, actions: dict[str, Any]) -> None:
        rf = actions.get("require_form", {})
        cs = rf.get("config_schema", {})
        assert (
            rf.get("category") == "data_collection"
            and cs.get("form_template_id", {}).get("type") == "integer"
            and cs.get("form_template_id", {}).get("required") is True
            and cs.get("blocking", {}).get("type") == "boolean"
            and cs.get("blocking", {}).get("required") is True
            and cs.get("description", {}).get("type") == "string"
            and cs.get("description", {}).get("required") is False
        ), rf

    def test_send_email_as_seed(self, actions: dict[str, Any]) -> None:
        se = actions.get("send_email", {})
        cs = se.get("config_schema", {})
        assert (
            se.get("category") == "communication"
            and cs.get("template", {}).get("type") == "string"
            and cs.get("template", {}).get("required") is True
            and cs.get("delay_minutes", {}).get("type") == "integer"
            and cs.get("delay_minutes", {}).get("required") is False
            and cs.get("delay_minutes", {}).get("default") == 0
        ), se

    def test_update_segment_as_seed(self, actions: dict[str, Any]) -> None:
        us = actions.get("update_segment", {})
        cs = us.get("config_schema", {})
        assert (
            us.get("category") == "data_management"
            and cs.get("segment_id", {}).get("type") == "integer"
            and cs.get("segment_id", {}).get("required") is True
            and cs.get("action", {}).get("enum") == ["add", "remove"]
            and cs.get("action", {}).get("required") is True
        ), us
