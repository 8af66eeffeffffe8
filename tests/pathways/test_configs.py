from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.db import create_sessionmaker
from careflow.kit.clock import FrozenClock
from careflow.pathways.catalog import (
    CREATION_MODES,
    INBOX_VISIBILITIES,
    JOURNEY_TYPE_PATTERN,
    NEXT_ACTORS,
    PRIORITIES,
    TRIGGERS,
)
from tests.fixtures.assertions import assert_pathway_error, error_fields
from tests.fixtures.factories import Auth

TRIGGERS_URL = "/v1/pathway-triggers"
CONFIGS = "/v1/pathway-configs"
SPEC_EVENT_TYPES = {
    "patient.onboarded",
    "patient.logged_in",
    "patient.updated",
    "patient.first_login",
    "appointment.booked",
    "appointment.first_booked",
    "appointment.rescheduled",
    "appointment.cancelled",
    "appointment.completed",
    "invoice.created",
    "invoice.overdue",
    "invoice.paid",
    "message.received",
    "form.completed",
}
CONFIG_FIELDS = (
    "creation_mode",
    "inbox_visibility",
    "journey_type",
    "suggested_assignment",
    "suggested_priority",
    "expected_next_actor",
)
VALID_CONFIG = {
    "creation_mode": "create_new",
    "inbox_visibility": "hidden",
    "journey_type": "vip_bookings",
    "suggested_assignment": "usr_team_lead",
    "suggested_priority": "urgent",
    "expected_next_actor": "patient",
}


def assert_valid_config(config: dict[str, Any]) -> None:
    assert config["creation_mode"] in CREATION_MODES
    assert config["inbox_visibility"] in INBOX_VISIBILITIES
    assert re.match(JOURNEY_TYPE_PATTERN, config["journey_type"])
    assert isinstance(config["suggested_assignment"], str) and config["suggested_assignment"]
    assert config["suggested_priority"] in PRIORITIES
    assert config["expected_next_actor"] in NEXT_ACTORS


class TestPathwayTriggers:
    async def test_every_event_type_with_defaults_and_named_fields(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get(TRIGGERS_URL, headers=auth("specialist"))
        assert r.status_code == 200
        body = r.json()
        assert body["meta"] == {
            "total": 14,
            "limit": 20,
            "offset": 0,
            "request_id": r.headers["x-request-id"],
        }
        by_type = {t["trigger_type"]: t for t in body["data"]}
        assert set(by_type) == SPEC_EVENT_TYPES
        for trigger_type, trigger in by_type.items():
            assert set(trigger) == {
                "trigger_type",
                "entity_type",
                "description",
                "default_config",
                "condition_fields",
            }
            assert trigger["entity_type"] == trigger_type.split(".")[0]
            assert trigger["description"]
            assert set(trigger["default_config"]) == set(CONFIG_FIELDS)
            assert_valid_config(trigger["default_config"])
            for field in trigger["condition_fields"]:
                assert set(field) == {"name", "type", "maps_to", "description"}
                assert field["type"] == "array"

    @pytest.mark.parametrize(
        ("trigger_type", "fields"),
        [
            (
                "appointment.booked",
                {
                    "appointment_type_ids": "appointment.appointment_type_id",
                    "practitioner_ids": "appointment.practitioner_id",
                    "appointment_types": "appointment.type",
                },
            ),
            ("invoice.overdue", {"invoice_types": "invoice.type"}),
            ("patient.onboarded", {"patient_tags": "patient.tags"}),
            ("message.received", {"channels": "message.channel"}),
            ("form.completed", {"form_template_ids": "form.form_template_id"}),
        ],
    )
    async def test_named_condition_fields(
        self, client: httpx.AsyncClient, auth: Auth, trigger_type: str, fields: dict[str, str]
    ) -> None:
        r = await client.get(TRIGGERS_URL, headers=auth())
        [trigger] = [t for t in r.json()["data"] if t["trigger_type"] == trigger_type]
        assert {f["name"]: f["maps_to"] for f in trigger["condition_fields"]} == fields

    async def test_documented_defaults(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get(TRIGGERS_URL, headers=auth())
        by_type = {t["trigger_type"]: t["default_config"] for t in r.json()["data"]}
        assert by_type["message.received"] == {
            "creation_mode": "create_new",
            "inbox_visibility": "visible",
            "journey_type": "messages",
            "suggested_assignment": "front_desk",
            "suggested_priority": "medium",
            "expected_next_actor": "practice",
        }
        assert by_type["patient.logged_in"]["creation_mode"] == "suppress"
        assert by_type["patient.logged_in"]["inbox_visibility"] == "hidden"
        assert by_type["appointment.booked"]["journey_type"] == "appointments"
        assert by_type["appointment.booked"]["creation_mode"] == "reuse_open"
        assert by_type["invoice.created"]["journey_type"] == "billing"

    async def test_paging(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get(TRIGGERS_URL, params={"limit": 5, "offset": 10}, headers=auth())
        assert len(r.json()["data"]) == 4
        assert r.json()["meta"]["total"] == 14

    @pytest.mark.parametrize("role", ["patient", "support", "service"])
    async def test_staff_only(self, client: httpx.AsyncClient, auth: Auth, role: str) -> None:
        assert_pathway_error(await client.get(TRIGGERS_URL, headers=auth(role)), 403, "FORBIDDEN")


class TestPathwayConfigs:
    async def test_list_starts_with_every_default(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        r = await client.get(CONFIGS, headers=auth("specialist"))
        assert r.status_code == 200
        body = r.json()
        assert body["meta"] == {
            "total": 14,
            "limit": 20,
            "offset": 0,
            "request_id": r.headers["x-request-id"],
        }
        types = [c["trigger_type"] for c in body["data"]]
        assert types == sorted(SPEC_EVENT_TYPES)
        for config in body["data"]:
            assert set(config) == {"trigger_type", *CONFIG_FIELDS, "is_default", "updated_at"}
            assert config["is_default"] is True
            assert config["updated_at"] is None
            expected = dict(TRIGGERS[config["trigger_type"]].default_config)
            assert {f: config[f] for f in CONFIG_FIELDS} == expected

    async def test_list_paging(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get(CONFIGS, params={"limit": 3, "offset": 12}, headers=auth())
        assert [c["trigger_type"] for c in r.json()["data"]] == sorted(SPEC_EVENT_TYPES)[12:]
        assert r.json()["meta"]["limit"] == 3
        assert_pathway_error(
            await client.get(CONFIGS, params={"limit": 0}, headers=auth()),
            400,
            "VALIDATION_ERROR",
        )

    async def test_get_default(self, client: httpx.AsyncClient, auth: Auth) -> None:
        r = await client.get(f"{CONFIGS}/message.received", headers=auth("specialist"))
        assert r.status_code == 200
        assert r.json() == {
            "data": {
                "trigger_type": "message.received",
                "creation_mode": "create_new",
                "inbox_visibility": "visible",
                "journey_type": "messages",
                "suggested_assignment": "front_desk",
                "suggested_priority": "medium",
                "expected_next_actor": "practice",
                "is_default": True,
                "updated_at": None,
            },
            "meta": {"request_id": r.headers["x-request-id"]},
        }

    async def test_put_then_get_and_list(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        clock: FrozenClock,
        engine: AsyncEngine,
    ) -> None:
        clock.advance(hours=1)
        r = await client.put(f"{CONFIGS}/appointment.booked", json=VALID_CONFIG, headers=auth())
        assert r.status_code == 200, r.text
        expected = {
            "trigger_type": "appointment.booked",
            **VALID_CONFIG,
            "is_default": False,
            "updated_at": "2025-02-15T11:00:00Z",
        }
        assert r.json()["data"] == expected
        assert r.json()["meta"]["request_id"] == r.headers["x-request-id"]
        r = await client.get(f"{CONFIGS}/appointment.booked", headers=auth())
        assert r.json()["data"] == expected
        r = await client.get(CONFIGS, headers=auth())
        [listed] = [c for c in r.json()["data"] if c["trigger_type"] == "appointment.booked"]
        assert listed == expected
        assert sum(not c["is_default"] for c in r.json()["data"]) == 1

        # A second PUT replaces the stored config.
        clock.advance(minutes=1)
        second = {**VALID_CONFIG, "suggested_priority": "low"}
        r = await client.put(f"{CONFIGS}/appointment.booked", json=second, headers=auth())
        assert r.json()["data"]["suggested_priority"] == "low"
        assert r.json()["data"]["updated_at"] == "2025-02-15T11:01:00Z"

        async with create_sessionmaker(engine)() as s:
            entries = (
                await s.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.object_type == "pathway_config")
                    .order_by(AuditEntry.id)
                )
            ).all()
        assert [e.object_id for e in entries] == ["appointment.booked"] * 2
        assert entries[0].before == {
            "creation_mode": "reuse_open",
            "inbox_visibility": "visible",
            "journey_type": "appointments",
            "suggested_assignment": "front_desk",
            "suggested_priority": "medium",
            "expected_next_actor": "practice",
        }
        assert entries[1].before == {"suggested_priority": "urgent"}
        assert entries[1].after == {"suggested_priority": "low"}

    @pytest.mark.parametrize("field", CONFIG_FIELDS)
    async def test_put_requires_every_field(
        self, client: httpx.AsyncClient, auth: Auth, field: str
    ) -> None:
        body = dict(VALID_CONFIG)
        del body[field]
        r = await client.put(f"{CONFIGS}/appointment.booked", json=body, headers=auth())
        assert_pathway_error(r, 400, "VALIDATION_ERROR")
        assert error_fields(r) == {field}

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("creation_mode", "sometimes"),
            ("creation_mode", None),
            ("inbox_visibility", "shown"),
            ("journey_type", "Upper"),
            ("journey_type", "has space"),
            ("journey_type", ""),
            ("journey_type", None),
            ("suggested_assignment", ""),
            ("suggested_assignment", None),
            ("suggested_assignment", 5),
            ("suggested_priority", "critical"),
            ("expected_next_actor", "nobody"),
            ("extra", "field"),
        ],
    )
    async def test_put_validates(
        self, client: httpx.AsyncClient, auth: Auth, field: str, value: Any
    ) -> None:
        body = {**VALID_CONFIG, field: value}
        r = await client.put(f"{CONFIGS}/appointment.booked", json=body, headers=auth())
        assert_pathway_error(r, 400, "VALIDATION_ERROR")
        assert error_fields(r) == {field}

    async def test_unknown_trigger_type_is_404(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        assert_pathway_error(
            await client.get(f"{CONFIGS}/appointment.exploded", headers=auth()), 404, "NOT_FOUND"
        )
        r = await client.put(f"{CONFIGS}/appointment.exploded", json=VALID_CONFIG, headers=auth())
        assert_pathway_error(r, 404, "NOT_FOUND")

    @pytest.mark.parametrize("role", ["specialist", "patient", "support", "service"])
    async def test_put_is_admin_only(
        self, client: httpx.AsyncClient, auth: Auth, role: str
    ) -> None:
        r = await client.put(f"{CONFIGS}/appointment.booked", json=VALID_CONFIG, headers=auth(role))
        assert_pathway_error(r, 403, "FORBIDDEN")

    @pytest.mark.parametrize("role", ["patient", "support", "service"])
    async def test_reads_are_staff_only(
        self, client: httpx.AsyncClient, auth: Auth, role: str
    ) -> None:
        assert_pathway_error(await client.get(CONFIGS, headers=auth(role)), 403, "FORBIDDEN")
        r = await client.get(f"{CONFIGS}/appointment.booked", headers=auth(role))
        assert_pathway_error(r, 403, "FORBIDDEN")

    async def test_configs_are_per_organisation(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        await client.put(f"{CONFIGS}/appointment.booked", json=VALID_CONFIG, headers=auth())
        r = await client.get(f"{CONFIGS}/appointment.booked", headers=auth(org=2))
        assert r.json()["data"]["is_default"] is True
        assert r.json()["data"]["suggested_priority"] == "medium"
        r = await client.get(CONFIGS, headers=auth(org=2))
        assert all(c["is_default"] for c in r.json()["data"])
