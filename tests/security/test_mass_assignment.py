"""Mass assignment: server-owned fields in request bodies are refused and never stored.

``organization_id`` would move a row to another tenant; ``id``, ``version``,
``execution_count`` and the timestamps are careflow's bookkeeping. Every create and update
body must refuse them (400 naming the field) — or, if an endpoint ever chose to ignore
them instead, the stored row must still hold careflow's own values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.automations.models import AutomationRule
from careflow.db import create_sessionmaker
from careflow.events.models import Event
from careflow.pathways.models import Episode, PathwayConfig, PathwayRule
from careflow.templates.models import Template
from tests.security.conftest import EVERYTHING_RULE, PATHWAY_CONFIG, Auth, World

FORGED_TIME = "2001-01-01T00:00:00Z"

# Server-owned fields, each with a value careflow would never choose itself.
FORGED: dict[str, Any] = {
    "organization_id": 2,
    "id": 987654,
    "execution_count": 1000,
    "version": 99,
    "created_at": FORGED_TIME,
    "updated_at": FORGED_TIME,
    "last_executed_at": FORGED_TIME,
}


@dataclass(frozen=True)
class Write:
    method: str
    path: Callable[[World], str]
    body: Callable[[World], dict[str, Any]]
    model: Any
    ok: tuple[int, ...]


WRITES: dict[str, Write] = {
    "create automation rule": Write(
        "POST",
        lambda w: "/v1/automations/rules",
        lambda w: {**EVERYTHING_RULE, "name": "Another rule"},
        AutomationRule,
        (201,),
    ),
    "update automation rule": Write(
        "PUT",
        lambda w: f"/v1/automations/rules/{w.rule_id}",
        lambda w: {"name": "Renamed"},
        AutomationRule,
        (200,),
    ),
    "create pathway rule": Write(
        "POST",
        lambda w: "/v1/pathway-rules",
        lambda w: {"trigger_type": "appointment.booked", "rule_name": "Another", "priority": 3},
        PathwayRule,
        (201,),
    ),
    "update pathway rule": Write(
        "PATCH",
        lambda w: f"/v1/pathway-rules/{w.pathway_rule_id}",
        lambda w: {"rule_name": "Renamed"},
        PathwayRule,
        (200,),
    ),
    "put pathway config": Write(
        "PUT",
        lambda w: f"/v1/pathway-configs/{w.config_trigger}",
        lambda w: {**PATHWAY_CONFIG, "suggested_priority": "urgent"},
        PathwayConfig,
        (200,),
    ),
    "put template": Write(
        "PUT",
        lambda w: f"/v1/templates/email/{w.template_key}",
        lambda w: {"subject": "New subject", "body": "New body"},
        Template,
        (200, 201),
    ),
    "update episode": Write(
        "PATCH",
        lambda w: f"/v1/episodes/{w.episode_id}",
        lambda w: {"status": "closed"},
        Episode,
        (200,),
    ),
    "ingest event": Write(
        "POST",
        lambda w: "/v1/events",
        lambda w: {"type": "patient.updated", "data": {"patient": {"id": 100}}},
        Event,
        (202,),
    ),
}


def _row(obj: Any) -> dict[str, Any]:
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


async def table_rows(engine: AsyncEngine, model: Any) -> list[dict[str, Any]]:
    async with create_sessionmaker(engine)() as session:
        rows = (await session.scalars(select(model).order_by(model.id))).all()
        return [_row(r) for r in rows]


def _forged_value_stored(rows: list[dict[str, Any]], field: str) -> bool:
    for row in rows:
        if field not in row:
            continue
        value = row[field]
        if field == "organization_id" and value == FORGED[field]:
            return True
        if field in ("id", "execution_count", "version") and value == FORGED[field]:
            return True
        if field.endswith("_at") and value is not None and value.year == 2001:
            return True
    return False


class TestServerOwnedFields:
    @pytest.mark.parametrize("name", list(WRITES))
    async def test_refused_and_never_stored(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        world: World,
        name: str,
    ) -> None:
        write = WRITES[name]
        headers = auth("admin", org=world.org)
        for field, value in FORGED.items():
            before = await table_rows(engine, write.model)
            body = {**write.body(world), field: value}
            r = await client.request(write.method, write.path(world), json=body, headers=headers)
            after = await table_rows(engine, write.model)
            if r.status_code == 400:
                assert r.json()["error"]["code"].lower() == "validation_error"  # either family
                fields = {d["field"] for d in r.json()["error"]["details"]}
                assert field in fields or "body" in fields, (field, r.text)
                assert after == before, field
            else:
                # Ignoring is acceptable only if nothing of the forged value lands.
                assert r.status_code in write.ok, (field, r.text)
                assert not _forged_value_stored(after, field), (field, after)
            assert not _forged_value_stored(after, field), field

    async def test_the_clean_bodies_are_accepted(
        self, client: httpx.AsyncClient, auth: Auth, world: World
    ) -> None:
        # The table above only proves something if its bodies are otherwise valid.
        headers = auth("admin", org=world.org)
        for name, write in WRITES.items():
            r = await client.request(
                write.method, write.path(world), json=write.body(world), headers=headers
            )
            assert r.status_code in write.ok, (name, r.text)

    async def test_the_event_data_cannot_carry_an_organisation(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, world: World
    ) -> None:
        # Inside `data` anything goes (it is the producer's snapshot), but the stored
        # entity still belongs to the caller's organisation.
        body = {
            "type": "patient.updated",
            "data": {"patient": {"id": 555, "organization_id": 2, "org_id": 2}},
        }
        r = await client.post("/v1/events", json=body, headers=auth("service", org=world.org))
        assert r.status_code == 202, r.text
        events = await table_rows(engine, Event)
        assert {e["organization_id"] for e in events} == {world.org}
        other = await client.get("/v1/forms?patient_id=555", headers=auth("admin", org=2))
        assert other.json()["data"] == []
