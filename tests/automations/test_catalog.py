from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from careflow.automations.catalog import (
    ACTIONS,
    TRIGGERS,
    validate_action,
    validate_config,
    validate_trigger,
)

SEED_TRIGGERS: list[dict[str, Any]] = [
    {
        "event": "patient.onboarded",
        "category": "patient_lifecycle",
        "description": "New patient registered in the system",
        "entity_type": "patient",
        "config_schema": None,
    },
    {
        "event": "patient.first_login",
        "category": "patient_lifecycle",
        "description": "Patient logs in for the first time",
        "entity_type": "patient",
        "config_schema": None,
    },
    {
        "event": "appointment.before_start",
        "category": "appointment_lifecycle",
        "description": "Fires X hours/days before appointment starts",
        "entity_type": "appointment",
        "config_schema": {
            "hours_before": {
                "type": "integer",
                "description": "Hours before appointment to trigger",
                "default": 24,
                "min": 1,
                "max": 168,
            }
        },
    },
]

SEED_ACTIONS: list[dict[str, Any]] = [
    {
        "type": "require_form",
        "category": "data_collection",
        "description": "Create form instance and block access until signed",
        "config_schema": {
            "form_template_id": {
                "type": "integer",
                "required": True,
                "description": "Form template to instantiate",
            },
            "blocking": {
                "type": "boolean",
                "required": True,
                "description": "Block booking/access until form signed",
            },
            "description": {
                "type": "string",
                "required": False,
                "description": "Human-readable description",
            },
        },
    },
    {
        "type": "send_email",
        "category": "communication",
        "description": "Send transactional email to patient",
        "config_schema": {
            "template": {"type": "string", "required": True, "description": "Email template ID"},
            "delay_minutes": {
                "type": "integer",
                "required": False,
                "description": "Delay before sending (minutes)",
                "default": 0,
                # Not in the seed: a negative delay means nothing, and a delay of more than
                # 30 days belongs to a time-based trigger.
                "min": 0,
                "max": 43_200,
            },
        },
    },
    {
        "type": "update_segment",
        "category": "data_management",
        "description": "Add or remove patient from segment",
        "config_schema": {
            "segment_id": {"type": "integer", "required": True, "description": "Segment to update"},
            "action": {
                "type": "string",
                "required": True,
                "enum": ["add", "remove"],
                "description": "Add or remove from segment",
            },
        },
    },
]

SPEC_TRIGGERS = {
    "patient.onboarded": "patient",
    "patient.first_login": "patient",
    "appointment.booked": "appointment",
    "appointment.first_booked": "appointment",
    "appointment.rescheduled": "appointment",
    "appointment.cancelled": "appointment",
    "appointment.completed": "appointment",
    "appointment.before_start": "appointment",
    "appointment.after_end": "appointment",
    "form.completed": "form",
    "invoice.overdue": "invoice",
}


class TestTriggerCatalog:
    async def test_seed_entries_verbatim(
        self, client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get("/v1/automations/triggers", headers=auth("specialist"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"data"}
        by_event = {t["event"]: t for t in body["data"]}
        for expected in SEED_TRIGGERS:
            assert by_event[expected["event"]] == expected

    async def test_every_spec_trigger_is_listed(
        self, client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get("/v1/automations/triggers", headers=auth())
        data = r.json()["data"]
        assert {t["event"]: t["entity_type"] for t in data} == SPEC_TRIGGERS
        for trigger in data:
            assert set(trigger) == {
                "event",
                "category",
                "description",
                "entity_type",
                "config_schema",
            }
        by_event = {t["event"]: t for t in data}
        assert by_event["appointment.after_end"]["config_schema"] == {
            "hours_after": {
                "type": "integer",
                "description": "Hours after appointment ends to trigger",
                "default": 24,
                "min": 1,
                "max": 168,
            }
        }
        assert by_event["invoice.overdue"]["category"] == "billing"
        assert {by_event[e]["category"] for e in SPEC_TRIGGERS if e.startswith("appointment.")} == {
            "appointment_lifecycle"
        }


class TestActionCatalog:
    async def test_seed_entries_verbatim(
        self, client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get("/v1/automations/actions", headers=auth("specialist"))
        assert r.status_code == 200, r.text
        by_type = {a["type"]: a for a in r.json()["data"]}
        for expected in SEED_ACTIONS:
            assert by_type[expected["type"]] == expected

    async def test_send_sms_is_listed(
        self, client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
    ) -> None:
        r = await client.get("/v1/automations/actions", headers=auth())
        by_type = {a["type"]: a for a in r.json()["data"]}
        assert set(by_type) == {"require_form", "send_email", "send_sms", "update_segment"}
        sms = by_type["send_sms"]
        assert sms["category"] == "communication"
        assert sms["config_schema"]["template"]["required"] is True
        assert sms["config_schema"]["delay_minutes"] == {
            "type": "integer",
            "required": False,
            "description": "Delay before sending (minutes)",
            "default": 0,
            "min": 0,
            "max": 43_200,
        }

    async def test_answers_are_copies(
        self, client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
    ) -> None:
        before = [dict(a) for a in ACTIONS]
        await client.get("/v1/automations/actions", headers=auth())
        assert [dict(a) for a in ACTIONS] == before


SCHEMA: dict[str, Any] = {
    "count": {"type": "integer", "required": True, "description": "", "min": 1, "max": 5},
    "flag": {"type": "boolean", "required": False, "description": "", "default": False},
    "mode": {"type": "string", "required": False, "description": "", "enum": ["a", "b"]},
}


class TestValidateConfig:
    def test_valid_config_gets_defaults(self) -> None:
        filled, errors = validate_config({"count": 2}, SCHEMA, where="cfg")
        assert errors == []
        assert filled == {"count": 2, "flag": False}

    @pytest.mark.parametrize(
        ("config", "field", "message"),
        [
            ({}, "cfg.count", "is required"),
            ({"count": True}, "cfg.count", "must be an integer"),
            ({"count": 2.0}, "cfg.count", "must be an integer"),
            ({"count": "2"}, "cfg.count", "must be an integer"),
            ({"count": 0}, "cfg.count", "must be at least 1"),
            ({"count": 6}, "cfg.count", "must be at most 5"),
            ({"count": 1, "flag": 1}, "cfg.flag", "must be a boolean"),
            ({"count": 1, "mode": "c"}, "cfg.mode", "must be one of: a, b"),
            ({"count": 1, "mode": 3}, "cfg.mode", "must be a string"),
            ({"count": 1, "extra": 1}, "cfg.extra", "unknown field"),
        ],
    )
    def test_each_problem_names_its_field(
        self, config: dict[str, Any], field: str, message: str
    ) -> None:
        _, errors = validate_config(config, SCHEMA, where="cfg")
        assert [e["field"] for e in errors] == [field]
        assert errors[0]["message"].startswith(message)

    def test_every_problem_is_reported(self) -> None:
        _, errors = validate_config({"flag": "no", "x": 1}, SCHEMA, where="cfg")
        assert sorted(e["field"] for e in errors) == ["cfg.count", "cfg.flag", "cfg.x"]

    def test_no_schema_admits_only_empty(self) -> None:
        assert validate_config({}, None, where="t") == ({}, [])
        _, errors = validate_config({"a": 1}, None, where="t")
        assert errors[0]["field"] == "t.a"

    def test_not_an_object(self) -> None:
        _, errors = validate_config([1], SCHEMA, where="cfg")
        assert errors == [{"field": "cfg", "message": "must be an object"}]

    def test_integers_stay_within_32_bits(self) -> None:
        errors = validate_action(
            {"type": "update_segment", "segment_id": 2**31, "action": "add"}, "a"
        )
        assert [e["field"] for e in errors] == ["a.segment_id"]


class TestCatalogHelpers:
    def test_trigger_defaults(self) -> None:
        assert validate_trigger("appointment.before_start", None) == ({"hours_before": 24}, [])
        assert validate_trigger("appointment.after_end", {"hours_after": 2}) == (
            {"hours_after": 2},
            [],
        )

    def test_unknown_trigger(self) -> None:
        _, errors = validate_trigger("patient.exploded", {})
        assert [e["field"] for e in errors] == ["trigger_event"]

    def test_catalog_schemas_use_known_types(self) -> None:
        for entry in [*TRIGGERS, *ACTIONS]:
            for spec in (entry["config_schema"] or {}).values():
                assert spec["type"] in {"integer", "boolean", "string"}
                assert "description" in spec
