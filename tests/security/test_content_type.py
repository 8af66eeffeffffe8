"""A body is read as JSON when it is sent as JSON, on every endpoint alike (SPEC §3).

``application/json`` (with any parameters) and ``application/*+json`` are read; any other
type, or none, is a 400 of the endpoint's family that says so, and nothing is stored.
The automation rule endpoints, which read their own body, used to store a rule sent as
``text/plain``, while every other endpoint refused it with a message about dictionaries.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.automations.models import AutomationRule
from careflow.db import create_sessionmaker
from careflow.errors import NOT_JSON_CONTENT
from careflow.events.models import Event
from careflow.pathways.models import PathwayRule
from tests.security.conftest import Auth

RULE = {
    "name": "Welcome",
    "trigger_event": "patient.onboarded",
    "actions": [{"type": "send_email", "template": "welcome_patient"}],
}
PATHWAY_RULE = {"trigger_type": "appointment.booked", "rule_name": "VIP", "priority": 0}
EVENT = {"type": "patient.onboarded", "data": {"patient": {"id": 100}}}

# (method, path, body, role, family: "automations" lower-case codes or "pathways" upper)
WRITES: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("POST", "/v1/automations/rules", RULE, "admin", "automations"),
    ("POST", "/v1/events", EVENT, "service", "automations"),
    ("POST", "/v1/pathway-rules", PATHWAY_RULE, "admin", "pathways"),
]


async def _stored(engine: AsyncEngine) -> list[int]:
    async with create_sessionmaker(engine)() as session:
        return [
            await session.scalar(select(func.count()).select_from(model)) or 0
            for model in (AutomationRule, Event, PathwayRule)
        ]


@pytest.mark.parametrize(("method", "path", "body", "role", "family"), WRITES)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x", None]
)
async def test_a_body_of_another_content_type_is_refused(
    client: httpx.AsyncClient,
    auth: Auth,
    engine: AsyncEngine,
    method: str,
    path: str,
    body: dict[str, Any],
    role: str,
    family: str,
    content_type: str | None,
) -> None:
    headers = auth(role)
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = await client.request(method, path, content=json.dumps(body).encode(), headers=headers)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == ("validation_error" if family == "automations" else "VALIDATION_ERROR")
    assert {"field": "body", "message": NOT_JSON_CONTENT} in error["details"]
    assert await _stored(engine) == [0, 0, 0]


@pytest.mark.parametrize(("method", "path", "body", "role", "family"), WRITES)
@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/vnd.api+json"]
)
async def test_json_is_read_however_it_is_labelled(
    client: httpx.AsyncClient,
    auth: Auth,
    method: str,
    path: str,
    body: dict[str, Any],
    role: str,
    family: str,
    content_type: str,
) -> None:
    headers = {**auth(role), "Content-Type": content_type}
    r = await client.request(method, path, content=json.dumps(body).encode(), headers=headers)
    assert r.status_code in (201, 202), r.text


async def test_a_rule_update_of_another_content_type_is_refused(
    client: httpx.AsyncClient, auth: Auth
) -> None:
    created = (await client.post("/v1/automations/rules", json=RULE, headers=auth())).json()
    path = f"/v1/automations/rules/{created['data']['id']}"
    r = await client.put(
        path,
        content=json.dumps({"name": "Renamed"}),
        headers={**auth(), "Content-Type": "text/plain"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["details"] == [{"field": "body", "message": NOT_JSON_CONTENT}]
    assert (await client.get(path, headers=auth())).json()["data"]["name"] == "Welcome"


async def test_roles_are_still_checked_first(client: httpx.AsyncClient, auth: Auth) -> None:
    for role in ("specialist", "support"):
        r = await client.post(
            "/v1/automations/rules",
            content=json.dumps(RULE),
            headers={**auth(role), "Content-Type": "text/plain"},
        )
        assert r.status_code == 403, (role, r.text)
