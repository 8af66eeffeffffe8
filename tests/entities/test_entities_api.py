"""PUT /v1/entities/{entity_type}/{id}: a snapshot stored without an event."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from careflow.db import create_sessionmaker
from careflow.entities.models import Entity
from careflow.events.models import Event
from careflow.jobs.models import Job
from tests.fixtures.database import count
from tests.fixtures.factories import onboarded, post_event


def _fields(body: dict[str, Any]) -> list[str]:
    return [d["field"] for d in body["error"]["details"]]


async def stored(engine: Any, entity_type: str, entity_id: Any) -> dict[str, Any] | None:
    async with create_sessionmaker(engine)() as session:
        row = await session.scalar(
            select(Entity).where(Entity.entity_type == entity_type, Entity.entity_id == entity_id)
        )
    return None if row is None else row.data


class TestPutEntity:
    async def test_replaces(self, client, auth, engine) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded())
        response = await client.put(
            "/v1/entities/patient/100",
            json={"id": 100, "email": "b@example.com"},
            headers=auth("service"),
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"data": {"id": 100, "email": "b@example.com"}}
        assert await stored(engine, "patient", 100) == {"id": 100, "email": "b@example.com"}
        # No event, no job: a backfill runs no rule.
        assert await count(engine, Event) == 1
        assert await count(engine, Job) == 1

    async def test_without_id_takes_path_id(self, client, auth) -> None:
        response = await client.put(
            "/v1/entities/appointment/apt-7", json={"type": "video"}, headers=auth("admin")
        )
        assert response.status_code == 200
        assert response.json()["data"] == {"type": "video", "id": "apt-7"}

    @pytest.mark.parametrize(
        ("path", "body", "field"),
        [
            ("/v1/entities/doctor/1", {"id": 1}, "entity_type"),
            ("/v1/entities/patient/100", {"id": 101}, "id"),
            ("/v1/entities/patient/100", {"id": True}, "id"),
            ("/v1/entities/appointment/5", {"patient_id": [1]}, "patient_id"),
            ("/v1/entities/appointment/5", {"starts_at": "not-a-date"}, "starts_at"),
            ("/v1/entities/appointment/5", {"ends_at": "2025-02-20"}, "ends_at"),
        ],
    )
    async def test_invalid(self, client, auth, path, body, field) -> None:
        response = await client.put(path, json=body, headers=auth("service"))
        assert response.status_code == 400
        assert field in _fields(response.json())

    async def test_body_must_be_object(self, client, auth) -> None:
        response = await client.put("/v1/entities/patient/1", json=[1], headers=auth("admin"))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "validation_error"

    @pytest.mark.parametrize("role", ["specialist", "patient", "support"])
    async def test_roles(self, client, auth, role) -> None:
        response = await client.put("/v1/entities/patient/1", json={}, headers=auth(role))
        assert response.status_code == 403


