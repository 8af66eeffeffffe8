"""Every event posted to /v1/events is routed to an episode: create_new, reuse_open, suppress."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Drain
from tests.fixtures.factories import PATIENT, post_event

Auth = Callable[..., dict[str, str]]


def config(mode: str, journey: str) -> dict[str, Any]:
    return {
        "creation_mode": mode,
        "inbox_visibility": "visible",
        "journey_type": journey,
        "suggested_assignment": "care_team",
        "suggested_priority": "medium",
        "expected_next_actor": "practice",
    }


async def set_config(
    client: httpx.AsyncClient, auth: Auth, trigger: str, body: dict[str, Any]
) -> None:
    r = await client.put(f"/v1/pathway-configs/{trigger}", json=body, headers=auth())
    assert r.status_code == 200, r.text


async def episodes(client: httpx.AsyncClient, auth: Auth, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/episodes", params={"limit": 100, **params}, headers=auth())
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def appointment(appointment_id: int, **extra: Any) -> dict[str, Any]:
    return {
        "appointment": {
            "id": appointment_id,
            "patient_id": PATIENT["id"],
            "type": "video",
            "starts_at": "2025-02-20T09:00:00Z",
            "ends_at": "2025-02-20T09:30:00Z",
            **extra,
        },
        "patient": dict(PATIENT),
    }


class TestRoutingThroughEvents:
    async def test_create_new_opens_an_episode_per_event(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain
    ) -> None:
        await set_config(client, auth, "message.received", config("create_new", "messages"))
        for i in range(2):
            await post_event(
                client,
                auth,
                "message.received",
                {
                    "message": {"id": f"m{i}", "channel": "sms", "patient_id": 100},
                    "patient": dict(PATIENT),
                },
            )
        await drain()
        found = await episodes(client, auth, journey_type="messages")
        assert len(found) == 2
        assert {e["patient_id"] for e in found} == {100}

    async def test_reuse_open_attaches_to_the_open_episode_and_events_show_it(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain
    ) -> None:
        for trigger in ("appointment.booked", "appointment.rescheduled"):
            await set_config(client, auth, trigger, config("reuse_open", "appointments"))
        booked = await post_event(client, auth, "appointment.booked", appointment(50))
        moved = await post_event(
            client,
            auth,
            "appointment.rescheduled",
            appointment(50, starts_at="2025-02-21T09:00:00Z"),
        )
        await drain()
        [episode] = await episodes(client, auth, journey_type="appointments")
        r = await client.get(f"/v1/episodes/{episode['id']}", headers=auth())
        assert [e["type"] for e in r.json()["data"]["events"]] == [
            "appointment.booked",
            "appointment.rescheduled",
        ]
        for posted in (booked, moved):
            event = await client.get(f"/v1/events/{posted['data']['id']}", headers=auth())
            assert event.json()["data"]["episode_id"] == episode["id"]

        # Closed, it is no longer reused: the next event opens a new one.
        r = await client.patch(
            f"/v1/episodes/{episode['id']}", json={"status": "closed"}, headers=auth()
        )
        assert r.status_code == 200
        await post_event(client, auth, "appointment.booked", appointment(51))
        await drain()
        assert len(await episodes(client, auth, journey_type="appointments")) == 2

    async def test_suppress_rule_silences_billing_for_some_invoice_types(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain
    ) -> None:
        await set_config(client, auth, "invoice.created", config("create_new", "billing"))
        r = await client.post(
            "/v1/pathway-rules",
            json={
                "trigger_type": "invoice.created",
                "rule_name": "No inbox noise for insurance invoices",
                "priority": 0,
                "conditions": {"invoice_types": ["insurance"]},
                "creation_mode": "suppress",
            },
            headers=auth(),
        )
        assert r.status_code == 201, r.text
        for invoice_id, kind in ((1, "insurance"), (2, "self_pay")):
            await post_event(
                client,
                auth,
                "invoice.created",
                {"invoice": {"id": invoice_id, "patient_id": 100, "type": kind, "amount": 80}},
            )
        await drain()
        found = await episodes(client, auth, journey_type="billing")
        assert len(found) == 1

    async def test_vip_booking_is_urgent_for_the_team_lead(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain
    ) -> None:
        r = await client.post(
            "/v1/pathway-rules",
            json={
                "trigger_type": "appointment.booked",
                "rule_name": "VIP bookings → urgent priority",
                "priority": 0,
                "conditions": {"appointment_type_ids": ["type_vip_consultation"]},
                "suggested_assignment": "usr_team_lead",
                "suggested_priority": "urgent",
            },
            headers=auth(),
        )
        assert r.status_code == 201, r.text
        await post_event(
            client,
            auth,
            "appointment.booked",
            appointment(60, appointment_type_id="type_vip_consultation"),
        )
        await drain()
        [episode] = await episodes(client, auth, suggested_priority="urgent")
        assert (episode["priority"], episode["assignee"], episode["suggested_assignment"]) == (
            "urgent",
            "usr_team_lead",
            "usr_team_lead",
        )


class TestEpisodesAudited:
    async def _audit(self, client: httpx.AsyncClient, auth: Auth) -> list[dict[str, Any]]:
        r = await client.get(
            "/v1/audit-log", params={"object_type": "episode", "limit": 100}, headers=auth()
        )
        assert r.status_code == 200, r.text
        return r.json()["data"]  # type: ignore[no-any-return]

    async def test_an_opened_episode_is_audited_once_with_careflow_as_its_actor(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain
    ) -> None:
        for trigger in ("appointment.booked", "appointment.rescheduled"):
            await set_config(client, auth, trigger, config("reuse_open", "appointments"))
        booked = await post_event(client, auth, "appointment.booked", appointment(50))
        await post_event(
            client,
            auth,
            "appointment.rescheduled",
            appointment(50, starts_at="2025-02-21T09:00:00Z"),
        )
        await drain()
        [episode] = await episodes(client, auth, journey_type="appointments")
        # The second event joined the episode: one creation, not two.
        [entry] = await self._audit(client, auth)
        assert (entry["action"], entry["object_id"]) == ("create", str(episode["id"]))
        assert (entry["actor_sub"], entry["actor_role"]) == ("careflow", "system")
        assert entry["before"] is None
        assert entry["after"] == {
            "patient_id": PATIENT["id"],
            "journey_type": "appointments",
            "status": "open",
            "inbox_visibility": "visible",
            "suggested_assignment": "care_team",
            "suggested_priority": "medium",
            "expected_next_actor": "practice",
            "assignee": "care_team",
            "priority": "medium",
            "event": booked["data"]["id"],
        }
        # Ids only: the patient's name, email and phone stay out of the audit log.
        assert PATIENT["email"] not in str(entry) and PATIENT["first_name"] not in str(entry)

        r = await client.patch(
            f"/v1/episodes/{episode['id']}", json={"status": "closed"}, headers=auth()
        )
        assert r.status_code == 200
        update, create = await self._audit(client, auth)
        assert (update["action"], update["actor_role"], create["action"]) == (
            "update",
            "admin",
            "create",
        )

    async def test_a_suppressed_event_opens_and_audits_nothing(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain
    ) -> None:
        await set_config(client, auth, "invoice.created", config("suppress", "billing"))
        await post_event(client, auth, "invoice.created", {"invoice": {"id": 1, "patient_id": 100}})
        await drain()
        assert await episodes(client, auth) == []
        assert await self._audit(client, auth) == []
