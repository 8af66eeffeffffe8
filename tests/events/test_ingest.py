"""POST /v1/events, GET /v1/events/{id}."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from careflow.db import create_sessionmaker
from careflow.entities.models import Entity
from careflow.events import service
from careflow.events.models import Event
from careflow.events.schemas import EventIn
from careflow.jobs.models import Job
from tests.conftest import T0
from tests.fixtures.database import count
from tests.fixtures.factories import EVENTS, PATIENT, onboarded, post_event


class TestIngest:
    async def test_accepted_with_dispatch_job(self, client, auth, engine) -> None:
        body = await post_event(client, auth, "patient.onboarded", onboarded(), event_id="e-1")
        assert body["data"]["event_id"] == "e-1"
        assert body["data"]["type"] == "patient.onboarded"
        assert body["data"]["status"] == "accepted"
        assert isinstance(body["data"]["id"], int)
        async with create_sessionmaker(engine)() as session:
            jobs = list(await session.scalars(select(Job)))
        assert [(j.kind, j.payload) for j in jobs] == [
            ("dispatch_event", {"event_id": body["data"]["id"]})
        ]

    async def test_admin_may_ingest(self, client, auth) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded(), role="admin")

    @pytest.mark.parametrize("role", ["specialist", "patient", "support"])
    async def test_other_roles_forbidden(self, client, auth, role, engine) -> None:
        body = await post_event(
            client, auth, "patient.onboarded", onboarded(), role=role, expect=403
        )
        assert body["error"]["code"] == "forbidden"
        assert await count(engine, Event) == 0

    async def test_no_token(self, client) -> None:
        response = await client.post(EVENTS, json={"type": "patient.onboarded", "data": {}})
        assert response.status_code == 401

    async def test_duplicate_event_id_returns_first(self, client, auth, engine) -> None:
        first = await post_event(client, auth, "patient.onboarded", onboarded(), event_id="dup")
        again = await post_event(
            client, auth, "patient.onboarded", onboarded(), event_id="dup", expect=200
        )
        assert again == first
        assert await count(engine, Event) == 1
        assert await count(engine, Job) == 1

    async def test_duplicate_event_id_with_another_body_is_a_conflict(
        self, client, auth, engine
    ) -> None:
        first = await post_event(client, auth, "patient.onboarded", onboarded(), event_id="dup")
        again = await post_event(
            client,
            auth,
            "patient.updated",
            onboarded({**PATIENT, "email": "other@example.com"}),
            event_id="dup",
            expect=409,
        )
        assert again["error"]["code"] == "event_id_conflict"
        [detail] = again["error"]["details"]
        assert detail["field"] == "event_id"
        assert f"event {first['data']['id']} " in detail["message"]
        assert await count(engine, Event) == 1
        assert await count(engine, Job) == 1
        # The conflicting event's data is not stored either.
        async with create_sessionmaker(engine)() as session:
            patient = await session.scalar(select(Entity))
        assert patient is not None and patient.data["email"] == PATIENT["email"]

    async def test_same_event_id_other_org_is_new(self, client, auth, engine) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded(), event_id="x")
        await post_event(client, auth, "patient.onboarded", onboarded(), event_id="x", org=2)
        assert await count(engine, Event) == 2

    async def test_without_event_id_always_new(self, client, auth, engine) -> None:
        a = await post_event(client, auth, "patient.onboarded", onboarded())
        b = await post_event(client, auth, "patient.onboarded", onboarded())
        assert a["data"]["id"] != b["data"]["id"]
        assert a["data"]["event_id"] is None
        assert await count(engine, Job) == 2

    async def test_duplicate_after_processing_reports_its_status(self, client, auth, drain) -> None:
        await post_event(client, auth, "patient.onboarded", onboarded(), event_id="p")
        await drain()
        again = await post_event(
            client, auth, "patient.onboarded", onboarded(), event_id="p", expect=200
        )
        assert again["data"]["status"] == "processed"

    async def test_occurred_at_defaults_to_now_and_is_kept(self, client, auth) -> None:
        a = await post_event(client, auth, "patient.onboarded", onboarded())
        b = await post_event(
            client,
            auth,
            "patient.onboarded",
            onboarded(),
            occurred_at="2025-02-14T09:30:00+01:00",
        )
        got_a = (await client.get(f"{EVENTS}/{a['data']['id']}", headers=auth())).json()
        got_b = (await client.get(f"{EVENTS}/{b['data']['id']}", headers=auth())).json()
        assert got_a["data"]["occurred_at"] == "2025-02-15T10:00:00Z"
        assert got_b["data"]["occurred_at"] == "2025-02-14T08:30:00Z"

    async def test_idempotency_key_replays(self, client, auth, engine) -> None:
        headers = {**auth("service"), "Idempotency-Key": "k-1"}
        body = {"type": "patient.onboarded", "data": onboarded()}
        first = await client.post(EVENTS, json=body, headers=headers)
        second = await client.post(EVENTS, json=body, headers=headers)
        assert first.status_code == 202, first.text
        assert second.status_code == 202, second.text
        assert second.json() == first.json()
        assert second.headers.get("Idempotent-Replayed") == "true"
        assert await count(engine, Event) == 1

    async def test_rolled_back_ingestion_leaves_nothing(self, engine) -> None:
        maker = create_sessionmaker(engine)
        async with maker() as session:
            body = EventIn(type="patient.onboarded", data=onboarded())
            result = await service.ingest_event(session, 1, body, now=T0)
            assert result.created
            await session.rollback()
        assert await count(engine, Event) == 0
        assert await count(engine, Job) == 0
        assert await count(engine, Entity) == 0


def _fields(body: dict[str, Any]) -> list[str]:
    return [d["field"] for d in body["error"]["details"]]


class TestValidation:
    @pytest.mark.parametrize(
        ("type_", "data", "field"),
        [
            ("patient.onboarded", {}, "data.patient.id"),
            ("patient.logged_in", {"patient": {"email": "a@b.c"}}, "data.patient.id"),
            ("patient.first_login", {"patient": {"id": True}}, "data.patient.id"),
            ("patient.updated", {"patient": {"id": ""}}, "data.patient.id"),
            ("patient.updated", {"patient": {"id": 1.5}}, "data.patient.id"),
            ("patient.updated", {"patient": "100"}, "data.patient"),
            ("appointment.cancelled", {}, "data.appointment.id"),
            ("appointment.booked", {"appointment": {"id": 50}}, "data.appointment.patient_id"),
            (
                "appointment.first_booked",
                {"appointment": {"id": 50}},
                "data.appointment.patient_id",
            ),
            (
                "appointment.rescheduled",
                {"appointment": {"id": 50, "patient_id": False}},
                "data.appointment.patient_id",
            ),
            ("invoice.overdue", {"invoice": {"amount": 10}}, "data.invoice.id"),
            ("form.completed", {}, "data.form.id"),
            ("message.received", {}, "data.message"),
            ("message.received", {"message": "hi"}, "data.message"),
            (
                "appointment.booked",
                {"appointment": {"id": 50, "patient_id": 1, "starts_at": "garbage"}},
                "data.appointment.starts_at",
            ),
            (
                "appointment.rescheduled",
                {"appointment": {"id": 50, "ends_at": "2025-02-20T09:30:00"}},  # no time zone
                "data.appointment.ends_at",
            ),
            (
                "appointment.rescheduled",
                {"appointment": {"id": 50, "starts_at": 1739955600}},
                "data.appointment.starts_at",
            ),
            # No reminder a week before or after could be worked out (it crashed dispatch).
            (
                "appointment.booked",
                {"appointment": {"id": 50, "patient_id": 1, "starts_at": "0001-01-02T00:00:00Z"}},
                "data.appointment.starts_at",
            ),
            (
                "appointment.rescheduled",
                {"appointment": {"id": 50, "ends_at": "9999-12-31T00:00:00Z"}},
                "data.appointment.ends_at",
            ),
        ],
    )
    async def test_missing_entity(self, client, auth, type_, data, field, engine) -> None:
        body = await post_event(client, auth, type_, data, expect=400)
        assert body["error"]["code"] == "validation_error"
        assert field in _fields(body)
        assert await count(engine, Event) == 0

    async def test_unknown_type(self, client, auth) -> None:
        body = await post_event(client, auth, "patient.exploded", onboarded(), expect=400)
        assert _fields(body) == ["type"]

    async def test_appointment_times_with_a_zone_or_null_are_accepted(self, client, auth) -> None:
        for starts_at in (
            "2025-02-20T09:00:00Z",
            "2025-02-20T10:00:00+01:00",
            "2025-02-20t09:00:00z",  # RFC 3339 allows lower case
            None,
        ):
            appointment = {"id": 50, "patient_id": 1, "starts_at": starts_at}
            await post_event(client, auth, "appointment.booked", {"appointment": appointment})

    async def test_a_bad_time_is_named_without_echoing_it(self, client, auth) -> None:
        appointment = {"id": 50, "patient_id": 1, "starts_at": "next tuesday at Ada's"}
        body = await post_event(
            client, auth, "appointment.booked", {"appointment": appointment}, expect=400
        )
        assert body["error"]["details"] == [
            {
                "field": "data.appointment.starts_at",
                "message": "must be an ISO 8601 date-time with a time zone, e.g. 2025-02-20T09:00:00Z",
            }
        ]

    async def test_appointment_rescheduled_needs_no_patient(self, client, auth) -> None:
        await post_event(client, auth, "appointment.rescheduled", {"appointment": {"id": "a-1"}})

    async def test_message_received(self, client, auth) -> None:
        await post_event(client, auth, "message.received", {"message": {"body": "x"}})

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"type": "patient.onboarded", "data": onboarded(), "extra": 1}, "extra"),
            ({"data": onboarded()}, "type"),
            ({"type": "patient.onboarded", "data": onboarded(), "occurred_at": 5}, "occurred_at"),
            (
                {"type": "patient.onboarded", "data": onboarded(), "occurred_at": "yesterday"},
                "occurred_at",
            ),
            ({"type": "patient.onboarded", "data": onboarded(), "event_id": 7}, "event_id"),
            # No UTC time to store (it was a 500).
            (
                {
                    "type": "patient.onboarded",
                    "data": onboarded(),
                    "occurred_at": "0001-01-01T00:00:00+01:00",
                },
                "occurred_at",
            ),
            (
                {
                    "type": "patient.onboarded",
                    "data": onboarded(),
                    "occurred_at": "9999-12-31T23:59:59-01:00",
                },
                "occurred_at",
            ),
            ({"type": "patient.onboarded", "data": [1]}, "data"),
        ],
    )
    async def test_body_shape(self, client, auth, body, field) -> None:
        response = await client.post(EVENTS, json=body, headers=auth("service"))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "validation_error"
        assert field in _fields(response.json())

    async def test_not_json(self, client, auth) -> None:
        response = await client.post(
            EVENTS,
            content=b"{nope",
            headers={**auth("service"), "Content-Type": "application/json"},
        )
        assert response.status_code == 400


class TestGetEvent:
    async def test_shows_executions_and_episode(self, client, auth, drain) -> None:
        from tests.fixtures.factories import GDPR_WELCOME, create_rule

        rule = await create_rule(client, auth, GDPR_WELCOME)
        posted = await post_event(client, auth, "patient.onboarded", onboarded(), event_id="g")
        event_pk = posted["data"]["id"]
        before = (await client.get(f"{EVENTS}/{event_pk}", headers=auth("specialist"))).json()
        assert before["data"]["status"] == "accepted"
        assert before["data"]["executions"] == []
        await drain()
        response = await client.get(f"{EVENTS}/{event_pk}", headers=auth("service"))
        assert response.status_code == 200
        data = response.json()["data"]
        assert data["id"] == event_pk
        assert data["event_id"] == "g"
        assert data["type"] == "patient.onboarded"
        assert data["status"] == "processed"
        assert data["created_at"] == "2025-02-15T10:00:00Z"
        assert [(e["automation_rule_id"], e["status"]) for e in data["executions"]] == [
            (rule["id"], "success")
        ]
        assert "episode_id" in data

    async def test_not_found_and_tenancy(self, client, auth) -> None:
        posted = await post_event(client, auth, "patient.onboarded", onboarded())
        event_pk = posted["data"]["id"]
        # Org 2 asks for org 1's event; org 1 asks for an id no event has. (Chosen by org, not by
        # comparing headers: a token carries iat in whole seconds, so two issued apart can differ.)
        for org, pk in ((2, event_pk), (1, event_pk + 99)):
            response = await client.get(f"{EVENTS}/{pk}", headers=auth("admin", org=org))
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "event_not_found"

    @pytest.mark.parametrize("role", ["patient", "support"])
    async def test_roles(self, client, auth, role) -> None:
        response = await client.get(f"{EVENTS}/1", headers=auth(role))
        assert response.status_code == 403


class TestConcurrentDelivery:
    async def test_same_event_id_at_once_stores_one(self, engine, clock) -> None:
        maker = create_sessionmaker(engine)
        body = EventIn(event_id="race", type="patient.onboarded", data=onboarded())

        async def deliver() -> tuple[bool, int]:
            async with maker() as session:
                result = await service.ingest_event(session, 1, body, now=clock.now())
                await session.commit()
                return result.created, result.event.id

        outcomes = await asyncio.gather(deliver(), deliver(), deliver())
        assert sorted(created for created, _ in outcomes) == [False, False, True]
        assert len({pk for _, pk in outcomes}) == 1
        assert await count(engine, Event) == 1
        assert await count(engine, Job) == 1
