"""Limits (operations.md): request bodies over CAREFLOW_MAX_BODY_BYTES answer 413 in the
family's envelope, announced or streamed; ``limit`` is at most 100 on every list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.automations.models import AutomationRule
from careflow.config import Settings
from careflow.pathways.models import PathwayRule
from tests.conftest import make_settings
from tests.fixtures.database import count
from tests.fixtures.smtp import SmtpServer
from tests.security.conftest import Auth

MAX_BODY = 4096


@pytest.fixture
def settings(database_url: str, smtp: SmtpServer) -> Settings:
    # A small cap keeps the oversized bodies small too.
    return make_settings(database_url, smtp_url=smtp.url, max_body_bytes=MAX_BODY)


def oversized(body: dict[str, Any], field: str) -> dict[str, Any]:
    return {**body, field: "x" * (MAX_BODY + 100)}


# (method, path, a body that is valid apart from its size, the field padded, pathway family)
BODIES: list[tuple[str, str, dict[str, Any], str, bool]] = [
    (
        "POST",
        "/v1/automations/rules",
        {
            "name": "Rule",
            "trigger_event": "patient.onboarded",
            "actions": [{"type": "send_email", "template": "welcome_patient"}],
        },
        "description",
        False,
    ),
    (
        "POST",
        "/v1/events",
        {"type": "patient.onboarded", "data": {"patient": {"id": 1}}},
        "event_id",
        False,
    ),
    ("PUT", "/v1/entities/patient/1", {"id": 1}, "note", False),
    ("PUT", "/v1/templates/email/welcome_patient", {"subject": "Hi"}, "body", False),
    (
        "POST",
        "/v1/pathway-rules",
        {"trigger_type": "appointment.booked", "priority": 1},
        "rule_name",
        True,
    ),
    ("POST", "/v1/pathway-rules/resolve", {"trigger_type": "appointment.booked"}, "data", True),
]


async def _chunks(raw: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def assert_413(r: httpx.Response, pathway: bool) -> None:
    assert r.status_code == 413, r.text
    body = r.json()
    if pathway:
        assert body["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert body["meta"]["request_id"] == r.headers["x-request-id"]
    else:
        assert body["error"]["code"] == "payload_too_large"
        assert "meta" not in body
    assert r.headers["x-request-id"]


class TestBodySize:
    @pytest.mark.parametrize(
        ("method", "path", "body", "field", "pathway"),
        BODIES,
        ids=[f"{b[0]} {b[1]}" for b in BODIES],
    )
    async def test_announced_by_content_length(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        method: str,
        path: str,
        body: dict[str, Any],
        field: str,
        pathway: bool,
    ) -> None:
        r = await client.request(method, path, json=oversized(body, field), headers=auth())
        assert "content-length" in {k.lower() for k in r.request.headers}
        assert_413(r, pathway)

    @pytest.mark.parametrize(
        ("method", "path", "body", "field", "pathway"),
        BODIES,
        ids=[f"{b[0]} {b[1]}" for b in BODIES],
    )
    async def test_streamed_without_content_length(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        method: str,
        path: str,
        body: dict[str, Any],
        field: str,
        pathway: bool,
    ) -> None:
        raw = httpx.Request("POST", "/", json=oversized(body, field)).content
        headers = {**auth(), "Content-Type": "application/json"}
        r = await client.request(method, path, content=_chunks(raw), headers=headers)
        assert "content-length" not in {k.lower() for k in r.request.headers}
        assert_413(r, pathway)

    async def test_nothing_is_stored(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        for method, path, body, field, _ in BODIES:
            raw = httpx.Request("POST", "/", json=oversized(body, field)).content
            headers = {**auth(), "Content-Type": "application/json"}
            await client.request(method, path, content=_chunks(raw), headers=headers)
            await client.request(method, path, json=oversized(body, field), headers=auth())
        assert await count(engine, AutomationRule) == 0
        assert await count(engine, PathwayRule) == 0

    async def test_just_under_the_cap_is_accepted(
        self, client: httpx.AsyncClient, auth: Auth
    ) -> None:
        method, path, body, field, _ = BODIES[0]
        padded = {**body, field: "x" * (MAX_BODY - 400)}
        r = await client.request(method, path, json=padded, headers=auth())
        assert r.status_code == 201, r.text


def list_paths(app: FastAPI) -> list[str]:
    """Every GET operation with a ``limit`` parameter, from the app's own document."""
    paths = []
    for path, item in app.openapi()["paths"].items():
        params = item.get("get", {}).get("parameters", [])
        if any(p["name"] == "limit" and p["in"] == "query" for p in params):
            paths.append(path.replace("{segment_id}", "7"))
    return paths


class TestListLimit:
    async def test_every_list_is_found(self, app: FastAPI) -> None:
        # Guards the table below against a list endpoint losing its paging by accident.
        assert len(list_paths(app)) >= 11, list_paths(app)

    @pytest.mark.parametrize(("limit", "status"), [("100", 200), ("101", 400), ("0", 400)])
    async def test_limit_bounds_everywhere(
        self, client: httpx.AsyncClient, auth: Auth, app: FastAPI, limit: str, status: int
    ) -> None:
        for path in list_paths(app):
            r = await client.get(path, params={"limit": limit}, headers=auth())
            assert r.status_code == status, (path, r.text)
            if status == 400:
                body = r.json()
                assert body["error"]["code"].lower() == "validation_error"
                assert [d["field"] for d in body["error"]["details"]] == ["limit"]
