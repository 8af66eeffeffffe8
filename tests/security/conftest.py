"""Fixtures of the security suite: one organisation's worth of every kind of object."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.app import create_app
from careflow.kit.clock import FrozenClock
from tests.conftest import Drain, make_settings

Auth = Callable[..., dict[str, str]]

ROLES = ("admin", "specialist", "patient", "support", "service")

# The patient of the seeded organisation. Security tests look for these strings where they
# must never appear (logs, audit entries, error bodies), so they are unique on purpose.
CANARY_FIRST = "Zqx7Canary"
CANARY_LAST = "Vbn3Canarylast"
CANARY_EMAIL = "canary-7f3a@example.org"
CANARY_PHONE = "+447700900777"
CANARIES = (CANARY_FIRST, CANARY_LAST, CANARY_EMAIL, CANARY_PHONE)


def canary_patient(patient_id: int | str = 100) -> dict[str, Any]:
    return {
        "id": patient_id,
        "first_name": CANARY_FIRST,
        "last_name": CANARY_LAST,
        "email": CANARY_EMAIL,
        "phone": CANARY_PHONE,
        "timezone": "Europe/London",
    }


SEGMENT_ID = 7
FORM_TEMPLATE_ID = 42

# Every action type, so one patient.onboarded event leaves a form, two messages and a
# segment membership behind.
EVERYTHING_RULE: dict[str, Any] = {
    "name": "Onboarding: consent, welcome, segment",
    "trigger_event": "patient.onboarded",
    "conditions": {},
    "actions": [
        {"type": "require_form", "form_template_id": FORM_TEMPLATE_ID, "blocking": True},
        {"type": "send_email", "template": "welcome_patient"},
        {"type": "send_sms", "template": "welcome_patient"},
        {"type": "update_segment", "segment_id": SEGMENT_ID, "action": "add"},
    ],
}

PATHWAY_RULE: dict[str, Any] = {
    "trigger_type": "patient.onboarded",
    "rule_name": "Onboarding to the front desk",
    "priority": 0,
    "conditions": {},
    "suggested_assignment": "usr_front_desk",
    "suggested_priority": "high",
}

PATHWAY_CONFIG: dict[str, Any] = {
    "creation_mode": "create_new",
    "inbox_visibility": "visible",
    "journey_type": "onboarding",
    "suggested_assignment": "usr_team",
    "suggested_priority": "medium",
    "expected_next_actor": "practice",
}

TEMPLATE_OVERRIDE: dict[str, Any] = {
    "subject": "Welcome to the practice, {{ patient.first_name }}",
    "body": "Hello {{ patient.first_name }}, your account is ready.",
}


@dataclass
class World:
    """The ids of one organisation's objects, as its own admin saw them created."""

    org: int
    rule_id: int = 0
    execution_id: int = 0
    event_id: int = 0
    form_id: int = 0
    message_ids: list[str] = field(default_factory=list)
    episode_id: int = 0
    pathway_rule_id: str = ""
    patient_id: int | str = 100
    segment_id: int = SEGMENT_ID
    template_key: str = "welcome_patient"
    config_trigger: str = "patient.onboarded"
    audit_ids: list[int] = field(default_factory=list)


def _ok(r: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert r.status_code in statuses, r.text
    body: dict[str, Any] = r.json()
    return body


async def seed_world(
    client: httpx.AsyncClient, auth: Auth, run_jobs: Drain, *, org: int = 1, patient_id: int = 100
) -> World:
    """Create one of every object in ``org`` through the API, and run the work it causes."""
    world = World(org=org, patient_id=patient_id)
    admin = auth("admin", org=org)
    _ok(
        await client.put(
            f"/v1/templates/email/{world.template_key}", json=TEMPLATE_OVERRIDE, headers=admin
        ),
        201,
    )
    world.rule_id = _ok(
        await client.post("/v1/automations/rules", json=EVERYTHING_RULE, headers=admin), 201
    )["data"]["id"]
    _ok(
        await client.put(
            f"/v1/pathway-configs/{world.config_trigger}", json=PATHWAY_CONFIG, headers=admin
        ),
        200,
    )
    world.pathway_rule_id = _ok(
        await client.post("/v1/pathway-rules", json=PATHWAY_RULE, headers=admin), 201
    )["data"]["id"]
    event = {
        "event_id": f"evt-onboard-{org}",
        "type": "patient.onboarded",
        "data": {"patient": canary_patient(patient_id)},
    }
    world.event_id = _ok(
        await client.post("/v1/events", json=event, headers=auth("service", org=org)), 202
    )["data"]["id"]
    await run_jobs(until_settled=True)

    got = _ok(await client.get(f"/v1/events/{world.event_id}", headers=admin), 200)["data"]
    assert len(got["executions"]) == 1, got
    world.execution_id = got["executions"][0]["id"]
    world.episode_id = got["episode_id"]
    assert world.episode_id, got
    forms = _ok(await client.get("/v1/forms", headers=admin), 200)["data"]
    world.form_id = forms[0]["id"]
    messages = _ok(await client.get("/v1/messages", headers=admin), 200)["data"]
    world.message_ids = [m["id"] for m in messages]
    assert len(world.message_ids) == 2, messages
    members = _ok(await client.get(f"/v1/segments/{SEGMENT_ID}/members", headers=admin), 200)
    assert members["meta"]["total"] == 1
    audit = _ok(await client.get("/v1/audit-log", headers=admin), 200)["data"]
    world.audit_ids = [a["id"] for a in audit]
    assert world.audit_ids
    return world


@pytest.fixture
async def world(client: httpx.AsyncClient, auth: Auth, drain: Drain) -> World:
    return await seed_world(client, auth, drain, org=1)


ClientFactory = Callable[..., Any]


@pytest.fixture
async def client_with(engine: AsyncEngine, database_url: str) -> AsyncIterator[ClientFactory]:
    """``await client_with(jwt_public_key=…)`` → a client of an app with those settings."""
    opened: list[httpx.AsyncClient] = []

    async def make(**settings: Any) -> httpx.AsyncClient:
        app = create_app(
            make_settings(database_url, **settings),
            engine=engine,
            clock=FrozenClock(),
            migrate_sqlite=False,
        )
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        client = httpx.AsyncClient(transport=transport, base_url="http://careflow.test")
        opened.append(client)
        return client

    yield make
    for c in opened:
        await c.aclose()
