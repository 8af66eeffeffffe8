from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.db import create_sessionmaker
from careflow.events.models import Event
from careflow.kit.clock import FrozenClock
from careflow.pathways.episodes import route_event
from careflow.pathways.models import Episode, EpisodeEvent
from tests.conftest import T0
from tests.fixtures.factories import Auth, create_pathway_rule

EPISODES = "/v1/episodes"
EPISODE_KEYS = {
    "id",
    "patient_id",
    "journey_type",
    "status",
    "inbox_visibility",
    "suggested_assignment",
    "suggested_priority",
    "expected_next_actor",
    "assignee",
    "priority",
    "created_at",
    "updated_at",
}


def booking(patient_id: Any = 100, appointment_id: int = 50, **appointment: Any) -> dict[str, Any]:
    return {
        "appointment": {"id": appointment_id, "patient_id": patient_id, **appointment},
        "patient": {"id": patient_id},
    }


async def route(
    engine: AsyncEngine,
    event_type: str,
    context: dict[str, Any],
    *,
    org: int = 1,
    occurred_at: datetime = T0,
    now: datetime = T0,
    event_id: str | None = None,
    event_pk: int | None = None,
) -> tuple[int, int | None]:
    """Store an event (routing links to it) and route it; returns (event_pk, episode id)."""
    async with create_sessionmaker(engine)() as s:
        if event_pk is None:
            event = Event(
                organization_id=org,
                event_id=event_id,
                type=event_type,
                occurred_at=occurred_at,
                data=context,
                status="accepted",
                created_at=now,
            )
            s.add(event)
            await s.flush()
            event_pk = event.id
        episode = await route_event(
            s,
            organization_id=org,
            event_pk=event_pk,
            event_id=event_id,
            event_type=event_type,
            occurred_at=occurred_at,
            context=context,
            now=now,
        )
        episode_id = episode.id if episode is not None else None
        await s.commit()
    return event_pk, episode_id


async def count(engine: AsyncEngine, model: type[Any]) -> int:
    async with create_sessionmaker(engine)() as s:
        return await s.scalar(select(func.count()).select_from(model)) or 0


async def episode_row(engine: AsyncEngine, episode_id: int) -> Episode:
    async with create_sessionmaker(engine)() as s:
        episode = await s.get(Episode, episode_id)
        assert episode is not None
        return episode


class TestRouteEvent:
    async def test_reuse_open_attaches_to_the_patients_open_episode(
        self, engine: AsyncEngine
    ) -> None:
        _, first = await route(engine, "appointment.booked", booking(), event_id="e1")
        _, second = await route(
            engine, "appointment.rescheduled", booking(), event_id="e2", now=T0 + timedelta(hours=1)
        )
        assert first is not None and first == second
        episode = await episode_row(engine, first)
        assert (episode.patient_id, episode.journey_type, episode.status) == (
            100,
            "appointments",
            "open",
        )
        assert (episode.suggested_assignment, episode.assignee) == ("front_desk", "front_desk")
        assert (episode.suggested_priority, episode.priority) == ("medium", "medium")
        assert (episode.inbox_visibility, episode.expected_next_actor) == ("visible", "practice")
        assert episode.created_at == T0
        assert episode.updated_at == T0 + timedelta(hours=1)
        assert await count(engine, EpisodeEvent) == 2

    async def test_reuse_open_is_per_patient_journey_and_organisation(
        self, engine: AsyncEngine
    ) -> None:
        _, ada = await route(engine, "appointment.booked", booking(100))
        _, bob = await route(engine, "appointment.booked", booking(200))
        _, billing = await route(
            engine, "invoice.overdue", {"invoice": {"id": 7, "patient_id": 100}}
        )
        _, other_org = await route(engine, "appointment.booked", booking(100), org=2)
        assert len({ada, bob, billing, other_org}) == 4
        assert billing is not None and other_org is not None
        assert (await episode_row(engine, billing)).journey_type == "billing"
        assert (await episode_row(engine, other_org)).organization_id == 2

    async def test_reuse_open_skips_closed_and_takes_the_most_recent_open(
        self, engine: AsyncEngine
    ) -> None:
        async with create_sessionmaker(engine)() as s:
            episodes = []
            for created, status in (
                (T0, "open"),
                (T0 + timedelta(1), "open"),
                (T0 + timedelta(2), "closed"),
            ):
                episode = Episode(
                    organization_id=1,
                    patient_id=100,
                    journey_type="appointments",
                    status=status,
                    inbox_visibility="visible",
                    suggested_assignment="a",
                    suggested_priority="low",
                    expected_next_actor="practice",
                    assignee="a",
                    priority="low",
                    created_at=created,
                    updated_at=created,
                )
                s.add(episode)
                episodes.append(episode)
            await s.commit()
        _, chosen = await route(engine, "appointment.booked", booking("100"))
        assert chosen == episodes[1].id

    async def test_create_new_always_opens_an_episode(self, engine: AsyncEngine) -> None:
        message = {"message": {"id": 1, "patient_id": 100, "channel": "sms"}}
        _, first = await route(engine, "message.received", message)
        _, second = await route(engine, "message.received", message)
        assert first is not None and second is not None and first != second
        episode = await episode_row(engine, second)
        assert (episode.journey_type, episode.patient_id, episode.priority) == (
            "messages",
            100,
            "medium",
        )

    async def test_suppress_creates_nothing(self, engine: AsyncEngine) -> None:
        _, episode = await route(engine, "patient.logged_in", {"patient": {"id": 100}})
        assert episode is None
        assert await count(engine, Episode) == 0
        assert await count(engine, EpisodeEvent) == 0

    async def test_rules_decide_the_mode_and_fields(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await create_pathway_rule(client, auth, creation_mode="create_new", journey_type="vip")
        await create_pathway_rule(
            client,
            auth,
            trigger_type="invoice.created",
            conditions={"invoice_types": ["insurance"]},
            creation_mode="suppress",
        )
        vip = booking(appointment_type_id="type_vip_consultation")
        _, a = await route(engine, "appointment.booked", vip)
        _, b = await route(engine, "appointment.booked", vip)
        assert a is not None and b is not None and a != b
        episode = await episode_row(engine, a)
        assert (episode.journey_type, episode.assignee, episode.priority) == (
            "vip",
            "usr_team_lead",
            "urgent",
        )
        assert episode.suggested_priority == "urgent"
        insurance = {"invoice": {"id": 1, "patient_id": 100, "type": "insurance"}}
        assert (await route(engine, "invoice.created", insurance))[1] is None
        self_pay = {"invoice": {"id": 2, "patient_id": 100, "type": "self_pay"}}
        assert (await route(engine, "invoice.created", self_pay))[1] is not None

    async def test_routing_the_same_event_twice_links_it_once(self, engine: AsyncEngine) -> None:
        message = {"message": {"id": 1, "patient_id": 100}}
        event_pk, first = await route(engine, "message.received", message, event_id="m1")
        _, again = await route(
            engine, "message.received", message, event_id="m1", event_pk=event_pk
        )
        assert again == first
        assert await count(engine, Episode) == 1
        assert await count(engine, EpisodeEvent) == 1

    async def test_patient_from_the_entity(self, engine: AsyncEngine) -> None:
        _, episode_id = await route(
            engine, "form.completed", {"form": {"id": "f1", "patient_id": "pat_x"}}
        )
        assert episode_id is not None
        assert (await episode_row(engine, episode_id)).patient_id == "pat_x"

    async def test_unknown_event_type_is_not_routed(self, engine: AsyncEngine) -> None:
        assert (await route(engine, "appointment.before_start", booking()))[1] is None


async def seed_inbox(engine: AsyncEngine) -> dict[str, int]:
    """Four episodes created an hour apart (oldest first) in org 1, one in org 2."""
    ids: dict[str, int] = {}
    specs = [
        ("booking", "appointment.booked", booking(100)),
        ("overdue", "invoice.overdue", {"invoice": {"id": 1, "patient_id": 100}}),
        ("message", "message.received", {"message": {"id": 1, "patient_id": 200}}),
        ("cancel", "appointment.cancelled", booking(200)),
    ]
    for hour, (name, event_type, context) in enumerate(specs):
        at = T0 + timedelta(hours=hour)
        _, episode_id = await route(engine, event_type, context, occurred_at=at, now=at)
        assert episode_id is not None
        ids[name] = episode_id
    _, foreign = await route(engine, "appointment.booked", booking(100), org=2)
    assert foreign is not None
    ids["foreign"] = foreign
    return ids


class TestListEpisodes:
    async def test_newest_first_with_page_meta(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        ids = await seed_inbox(engine)
        r = await client.get(EPISODES, headers=auth("specialist"))
        assert r.status_code == 200
        body = r.json()
        assert [e["id"] for e in body["data"]] == [
            ids["cancel"],
            ids["message"],
            ids["overdue"],
            ids["booking"],
        ]
        assert body["meta"] == {"total": 4, "page": 1, "limit": 20}
        assert all(set(e) == EPISODE_KEYS for e in body["data"])
        booking_episode = body["data"][3]
        assert booking_episode == {
            "id": ids["booking"],
            "patient_id": 100,
            "journey_type": "appointments",
            "status": "open",
            "inbox_visibility": "visible",
            "suggested_assignment": "front_desk",
            "suggested_priority": "medium",
            "expected_next_actor": "practice",
            "assignee": "front_desk",
            "priority": "medium",
            "created_at": "2025-02-15T10:00:00Z",
            "updated_at": "2025-02-15T10:00:00Z",
        }

    async def test_paging(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        ids = await seed_inbox(engine)
        r = await client.get(EPISODES, params={"page": 2, "limit": 3}, headers=auth())
        assert [e["id"] for e in r.json()["data"]] == [ids["booking"]]
        assert r.json()["meta"] == {"total": 4, "page": 2, "limit": 3}

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ({"patient_id": "200"}, ["cancel", "message"]),
            ({"journey_type": "billing"}, ["overdue"]),
            ({"status": "open"}, ["cancel", "message", "overdue", "booking"]),
            ({"status": "closed"}, []),
            ({"inbox_visibility": "visible"}, ["cancel", "message", "overdue", "booking"]),
            ({"suggested_assignment": "billing_team"}, ["overdue"]),
            ({"suggested_priority": "high"}, ["cancel", "overdue"]),
            ({"patient_id": "100", "journey_type": "appointments"}, ["booking"]),
        ],
    )
    async def test_filters(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        query: dict[str, str],
        expected: list[str],
    ) -> None:
        ids = await seed_inbox(engine)
        r = await client.get(EPISODES, params=query, headers=auth())
        assert r.status_code == 200
        assert [e["id"] for e in r.json()["data"]] == [ids[n] for n in expected]
        assert r.json()["meta"]["total"] == len(expected)

    @pytest.mark.parametrize(
        "query",
        [{"status": "pending"}, {"suggested_priority": "critical"}, {"limit": "0"}, {"page": "0"}],
    )
    async def test_bad_query_is_400(
        self, client: httpx.AsyncClient, auth: Auth, query: dict[str, str]
    ) -> None:
        r = await client.get(EPISODES, params=query, headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"

    async def test_only_own_organisation(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        ids = await seed_inbox(engine)
        r = await client.get(EPISODES, headers=auth(org=2))
        assert [e["id"] for e in r.json()["data"]] == [ids["foreign"]]

    @pytest.mark.parametrize("role", ["patient", "support", "service"])
    async def test_staff_only(self, client: httpx.AsyncClient, auth: Auth, role: str) -> None:
        r = await client.get(EPISODES, headers=auth(role))
        assert r.status_code == 403
        assert r.json() == {
            "error": {"code": "forbidden", "message": r.json()["error"]["message"], "details": []}
        }


class TestGetEpisode:
    async def test_with_events_in_occurred_order(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        # Routed in one order, occurred in another: the episode lists them as they happened.
        _, episode_id = await route(
            engine,
            "appointment.rescheduled",
            booking(),
            event_id="late",
            occurred_at=T0 + timedelta(hours=2),
        )
        await route(engine, "appointment.booked", booking(), event_id="early", occurred_at=T0)
        await route(engine, "appointment.cancelled", booking(), occurred_at=T0 + timedelta(hours=3))
        r = await client.get(f"{EPISODES}/{episode_id}", headers=auth("specialist"))
        assert r.status_code == 200
        data = r.json()["data"]
        assert set(data) == EPISODE_KEYS | {"events"}
        assert data["events"] == [
            {
                "event_id": "early",
                "type": "appointment.booked",
                "occurred_at": "2025-02-15T10:00:00Z",
            },
            {
                "event_id": "late",
                "type": "appointment.rescheduled",
                "occurred_at": "2025-02-15T12:00:00Z",
            },
            {
                "event_id": None,
                "type": "appointment.cancelled",
                "occurred_at": "2025-02-15T13:00:00Z",
            },
        ]

    @pytest.mark.parametrize("episode_id", ["999999", "abc", "-1"])
    async def test_missing_is_404(
        self, client: httpx.AsyncClient, auth: Auth, episode_id: str
    ) -> None:
        r = await client.get(f"{EPISODES}/{episode_id}", headers=auth())
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "episode_not_found"

    async def test_other_organisation_is_404(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        ids = await seed_inbox(engine)
        r = await client.get(f"{EPISODES}/{ids['booking']}", headers=auth(org=2))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "episode_not_found"


class TestUpdateEpisode:
    async def test_patch_status_assignee_priority(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        clock: FrozenClock,
    ) -> None:
        ids = await seed_inbox(engine)
        clock.advance(hours=5)
        r = await client.patch(
            f"{EPISODES}/{ids['booking']}",
            json={"status": "closed", "assignee": "usr_7", "priority": "urgent"},
            headers=auth("specialist", sub="usr_spec"),
        )
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert (data["status"], data["assignee"], data["priority"]) == ("closed", "usr_7", "urgent")
        # The suggestions stay what routing suggested.
        assert (data["suggested_assignment"], data["suggested_priority"]) == (
            "front_desk",
            "medium",
        )
        assert data["updated_at"] == "2025-02-15T15:00:00Z"
        async with create_sessionmaker(engine)() as s:
            # Routing's own entries (careflow opened the episodes) aside: the caller's update.
            [entry] = (
                await s.scalars(select(AuditEntry).where(AuditEntry.actor_sub != "careflow"))
            ).all()
        assert (entry.action, entry.object_type, entry.object_id, entry.actor_sub) == (
            "update",
            "episode",
            str(ids["booking"]),
            "usr_spec",
        )
        assert entry.before == {"status": "open", "assignee": "front_desk", "priority": "medium"}

        # A closed episode is no longer reused: the next booking opens a new one.
        _, next_episode = await route(engine, "appointment.booked", booking(100))
        assert next_episode != ids["booking"]

    async def test_unassign(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        ids = await seed_inbox(engine)
        r = await client.patch(
            f"{EPISODES}/{ids['booking']}", json={"assignee": None}, headers=auth()
        )
        assert r.status_code == 200
        assert r.json()["data"]["assignee"] is None
        assert r.json()["data"]["status"] == "open"

    @pytest.mark.parametrize(
        "body",
        [
            {"status": "pending"},
            {"status": None},
            {"priority": "critical"},
            {"priority": None},
            {"assignee": ""},
            {"assignee": 5},
            {"journey_type": "other"},
        ],
    )
    async def test_invalid_is_400(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, body: dict[str, Any]
    ) -> None:
        ids = await seed_inbox(engine)
        r = await client.patch(f"{EPISODES}/{ids['booking']}", json=body, headers=auth())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "validation_error"
        assert "meta" not in r.json()

    async def test_missing_and_foreign_are_404(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        ids = await seed_inbox(engine)
        for url, headers in (
            (f"{EPISODES}/424242", auth()),
            (f"{EPISODES}/{ids['booking']}", auth(org=2)),
        ):
            r = await client.patch(url, json={"status": "closed"}, headers=headers)
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "episode_not_found"

    @pytest.mark.parametrize("role", ["patient", "support", "service"])
    async def test_staff_only(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, role: str
    ) -> None:
        ids = await seed_inbox(engine)
        r = await client.patch(
            f"{EPISODES}/{ids['booking']}", json={"status": "closed"}, headers=auth(role)
        )
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "forbidden"
