"""Input PostgreSQL cannot hold (NUL, lone surrogates, NaN/Infinity) and odd digits.

Each was a 500 on PostgreSQL (a driver error) while SQLite took it silently; now it is a
400 of the path's family everywhere, checked at the edge (kit/middleware.py for paths and
query strings, kit/text.py for bodies). Runs on both databases, so PostgreSQL proves it.
"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.entities.models import Entity
from careflow.events.models import Event
from careflow.pathways.models import PathwayRule
from tests.fixtures.database import count
from tests.security.conftest import Auth

QUERIES = [
    "/v1/episodes?journey_type=%00",
    "/v1/automations/rules?trigger_event=a%00b",
    "/v1/audit-log?actor=%00",
    "/v1/forms?patient_id=%00",
    "/v1/messages?status=%00",
    "/v1/pathway-rules?trigger_type=%00",
]

PATHS = [
    "/v1/episodes/%00",
    "/v1/pathway-configs/appointment.booked%00",
    "/v1/pathway-rules/rule_%00",
    "/v1/patients/%00/gate",
    "/v1/messages/msg_%00",
]


def assert_family_400(path: str, r: httpx.Response) -> None:
    assert r.status_code == 400, (path, r.text)
    body = r.json()
    if path.startswith("/v1/pathway"):
        assert body["error"]["code"] == "VALIDATION_ERROR"
        assert body["meta"]["request_id"] == r.headers["x-request-id"]
    else:
        assert body["error"]["code"] == "validation_error"


class TestUrls:
    @pytest.mark.parametrize("url", QUERIES + PATHS)
    async def test_nul_in_the_url_is_a_400(
        self, client: httpx.AsyncClient, auth: Auth, url: str
    ) -> None:
        assert_family_400(url, await client.get(url, headers=auth()))

    @pytest.mark.parametrize(
        "url", ["/v1/episodes/%C2%B2", "/v1/episodes/%D9%A1%D9%A2", "/v1/patients/%C2%B2/gate"]
    )
    async def test_non_ascii_digits_are_not_ids(
        self, client: httpx.AsyncClient, auth: Auth, url: str
    ) -> None:
        # "²".isdigit() is True but int("²") raises: these were 500s.
        r = await client.get(url, headers=auth())
        assert r.status_code in (200, 404), r.text

    async def test_other_scripts_digits_are_not_the_ascii_id(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        # "١٢" (Arabic-Indic 12) must stay its own string id, not become patient 12.
        r = await client.put(
            "/v1/entities/patient/12", json={"first_name": "Twelve"}, headers=auth()
        )
        assert r.status_code == 200, r.text
        r = await client.put(
            "/v1/entities/patient/%D9%A1%D9%A2", json={"first_name": "Other"}, headers=auth()
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["id"] == "١٢"


BAD_VALUES: dict[str, str] = {
    "NUL": '"a\\u0000b"',
    "lone surrogate": '"\\ud800"',
    "NaN": "NaN",
    "Infinity": "Infinity",
}

# (method, path, body template with {bad} where the bad value goes)
BODIES: list[tuple[str, str, str]] = [
    (
        "POST",
        "/v1/events",
        '{"type": "patient.onboarded", "data": {"patient": {"id": 1, "x": {bad}}}}',
    ),
    (
        "POST",
        "/v1/events",
        '{"type": "patient.onboarded", "event_id": {bad}, "data": {"patient": {"id": 1}}}',
    ),
    ("PUT", "/v1/entities/patient/1", '{"first_name": {bad}}'),
    (
        "POST",
        "/v1/pathway-rules",
        '{"trigger_type": "appointment.booked", "rule_name": {bad}, "priority": 1}',
    ),
    (
        "POST",
        "/v1/pathway-rules",
        '{"trigger_type": "appointment.booked", "rule_name": "r", "priority": 1, '
        '"conditions": {"appointment.type": {bad}}}',
    ),
    (
        "POST",
        "/v1/pathway-rules/resolve",
        '{"trigger_type": "appointment.booked", "data": {"x": {bad}}}',
    ),
    ("PUT", "/v1/templates/email/welcome_patient", '{"subject": "s", "body": {bad}}'),
    (
        "POST",
        "/v1/automations/rules",
        '{"name": {bad}, "trigger_event": "patient.onboarded", "actions": []}',
    ),
]


class TestBodies:
    @pytest.mark.parametrize("kind", list(BAD_VALUES))
    @pytest.mark.parametrize(("method", "path", "template"), BODIES)
    async def test_unstorable_value_is_a_400(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        method: str,
        path: str,
        template: str,
        kind: str,
    ) -> None:
        raw = template.replace("{bad}", BAD_VALUES[kind]).encode()
        headers = {**auth(), "Content-Type": "application/json"}
        r = await client.request(method, path, content=raw, headers=headers)
        assert_family_400(path, r)
        for model in (Event, Entity, PathwayRule):
            assert await count(engine, model) == 0

    async def test_the_same_bodies_are_fine_with_a_plain_value(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        # Proves the table's bodies fail for the bad value alone.
        for i, (method, path, template) in enumerate(BODIES[:-1]):
            raw = template.replace("{bad}", '"fine"').replace('"priority": 1', f'"priority": {i}')
            headers = {**auth(), "Content-Type": "application/json"}
            r = await client.request(method, path, content=raw.encode(), headers=headers)
            assert r.status_code < 300, (path, r.text)
