"""Time-based triggers with a controllable clock: fires once, moves, drops, recomputes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.executions.models import Execution
from careflow.jobs.models import Job, JobStatus
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from careflow.scheduling.service import FIRE_KIND
from tests.conftest import Drain
from tests.fixtures.database import count
from tests.fixtures.factories import PATIENT, create_rule, post_event
from tests.fixtures.smtp import SmtpServer

Auth = Callable[..., dict[str, str]]
T0 = datetime(2025, 2, 15, 10, 0, tzinfo=UTC)
STARTS = datetime(2025, 2, 20, 9, 0, tzinfo=UTC)

REMINDER: dict[str, Any] = {
    "name": "Pre-Appointment Reminder",
    "trigger_event": "appointment.before_start",
    "trigger_config": {"hours_before": 24},
    "actions": [{"type": "send_email", "template": "appointment_reminder"}],
}
FOLLOW_UP: dict[str, Any] = {
    "name": "Follow-up",
    "trigger_event": "appointment.after_end",
    "trigger_config": {"hours_after": 2},
    "actions": [{"type": "send_email", "template": "appointment_follow_up"}],
}


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def appointment(
    starts: datetime = STARTS, *, appointment_id: int = 50, minutes: int = 30, **extra: Any
) -> dict[str, Any]:
    return {
        "appointment": {
            "id": appointment_id,
            "patient_id": PATIENT["id"],
            "type": "video",
            "starts_at": z(starts),
            "ends_at": z(starts + timedelta(minutes=minutes)),
            **extra,
        },
        "patient": dict(PATIENT),
    }


async def pending_fires(engine: AsyncEngine) -> list[Job]:
    async with create_sessionmaker(engine)() as session:
        rows = await session.scalars(
            select(Job).where(Job.kind == FIRE_KIND, Job.status == JobStatus.QUEUED)
        )
        return list(rows)


async def all_executions(engine: AsyncEngine) -> list[Execution]:
    async with create_sessionmaker(engine)() as session:
        return list(await session.scalars(select(Execution).order_by(Execution.id)))


async def book(client: httpx.AsyncClient, auth: Auth, drain: Drain, **kwargs: Any) -> None:
    await post_event(client, auth, "appointment.booked", appointment(**kwargs))
    await drain()


class TestBeforeStart:
    async def test_fires_once_at_its_time(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        smtp: SmtpServer,
    ) -> None:
        await create_rule(client, auth, REMINDER)
        await book(client, auth, drain)
        [fire] = await pending_fires(engine)
        assert fire.run_at == STARTS - timedelta(hours=24)

        clock.set(STARTS - timedelta(hours=24, seconds=1))
        await drain()
        assert await count(engine, Execution) == 0

        clock.set(STARTS - timedelta(hours=24))
        await drain()
        [execution] = await all_executions(engine)
        assert execution.status == "success"
        assert execution.trigger_event == "appointment.before_start"
        assert execution.trigger_entity_id == 50
        assert len(smtp.sink.messages) == 1

        # The same booking delivered again, and time moving on: still one reminder.
        await post_event(client, auth, "appointment.booked", appointment())
        clock.advance(hours=30)
        await drain()
        assert await count(engine, Execution) == 1
        assert len(smtp.sink.messages) == 1

    async def test_past_fire_time_is_not_fired(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
    ) -> None:
        await create_rule(client, auth, REMINDER)
        await book(client, auth, drain, starts=clock.now() + timedelta(hours=3))
        assert await pending_fires(engine) == []
        clock.advance(hours=4)
        await drain()
        assert await count(engine, Execution) == 0

    async def test_reschedule_moves_the_fire(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        smtp: SmtpServer,
    ) -> None:
        await create_rule(client, auth, REMINDER)
        await book(client, auth, drain)
        later = STARTS + timedelta(days=2)
        await post_event(client, auth, "appointment.rescheduled", appointment(later))
        await drain()
        [fire] = await pending_fires(engine)
        assert fire.run_at == later - timedelta(hours=24)

        clock.set(STARTS - timedelta(hours=24))
        await drain()
        assert await count(engine, Execution) == 0
        clock.set(later - timedelta(hours=24))
        await drain()
        [execution] = await all_executions(engine)
        assert execution.status == "success"
        assert len(smtp.sink.messages) == 1

    async def test_reschedule_arriving_while_the_old_fire_is_claimed(
        self,
        app: FastAPI,
        settings: Settings,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        smtp: SmtpServer,
    ) -> None:
        await create_rule(client, auth, REMINDER)
        await book(client, auth, drain)
        clock.set(STARTS - timedelta(hours=24))
        slow = Worker(app.state.sessionmaker, settings, clock, services=app.state.services)
        [claimed] = await slow.claim(1)
        assert claimed.kind == FIRE_KIND

        later = STARTS + timedelta(days=1)
        await post_event(client, auth, "appointment.rescheduled", appointment(later))
        await drain()  # dispatches the reschedule while the old fire is held
        await slow.run_batch([claimed])

        [execution] = await all_executions(engine)
        assert execution.status == "skipped"
        assert execution.error_message == "appointment moved"
        assert smtp.sink.messages == []

        clock.set(later - timedelta(hours=24))
        await drain()
        statuses = [e.status for e in await all_executions(engine)]
        assert statuses == ["skipped", "success"]
        assert len(smtp.sink.messages) == 1

    async def test_cancel_drops_the_fire(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        smtp: SmtpServer,
    ) -> None:
        await create_rule(client, auth, REMINDER)
        await book(client, auth, drain)
        await post_event(client, auth, "appointment.cancelled", {"appointment": {"id": 50}})
        await drain()
        assert await pending_fires(engine) == []
        clock.set(STARTS)
        await drain()
        assert await count(engine, Execution) == 0
        assert smtp.sink.messages == []

    async def test_cancel_racing_a_claimed_fire_is_recorded_and_sends_nothing(
        self,
        app: FastAPI,
        settings: Settings,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        smtp: SmtpServer,
    ) -> None:
        await create_rule(client, auth, REMINDER)
        await book(client, auth, drain)
        clock.set(STARTS - timedelta(hours=24))
        slow = Worker(app.state.sessionmaker, settings, clock, services=app.state.services)
        [claimed] = await slow.claim(1)
        await post_event(client, auth, "appointment.cancelled", {"appointment": {"id": 50}})
        await slow.run_batch([claimed])
        [execution] = await all_executions(engine)
        assert (execution.status, execution.error_message) == ("skipped", "appointment cancelled")
        assert smtp.sink.messages == []


class TestRuleChangesRecompute:
    async def test_edit_disable_enable_delete(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        engine: AsyncEngine,
    ) -> None:
        rule = await create_rule(client, auth, REMINDER)
        await book(client, auth, drain)
        url = f"/v1/automations/rules/{rule['id']}"

        r = await client.put(url, json={"trigger_config": {"hours_before": 2}}, headers=auth())
        assert r.status_code == 200, r.text
        await drain()
        assert [f.run_at for f in await pending_fires(engine)] == [STARTS - timedelta(hours=2)]

        await client.put(url, json={"enabled": False}, headers=auth())
        await drain()
        assert await pending_fires(engine) == []

        await client.put(url, json={"enabled": True}, headers=auth())
        await drain()
        assert [f.run_at for f in await pending_fires(engine)] == [STARTS - timedelta(hours=2)]

        assert (await client.delete(url, headers=auth())).status_code == 204
        await drain()
        assert await pending_fires(engine) == []

    async def test_rule_created_after_the_booking_schedules_it(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        engine: AsyncEngine,
    ) -> None:
        await book(client, auth, drain)
        assert await pending_fires(engine) == []
        await create_rule(client, auth, REMINDER)
        await drain()
        assert [f.run_at for f in await pending_fires(engine)] == [STARTS - timedelta(hours=24)]

    async def test_backfilled_appointment_is_scheduled(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        engine: AsyncEngine,
    ) -> None:
        await create_rule(client, auth, REMINDER)
        body = appointment()["appointment"]
        r = await client.put("/v1/entities/appointment/50", json=body, headers=auth("service"))
        assert r.status_code == 200, r.text
        assert [f.run_at for f in await pending_fires(engine)] == [STARTS - timedelta(hours=24)]


class TestAfterEnd:
    async def test_fires_after_the_end(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        smtp: SmtpServer,
    ) -> None:
        await create_rule(client, auth, FOLLOW_UP)
        await book(client, auth, drain, minutes=45)
        due = STARTS + timedelta(minutes=45, hours=2)
        assert [f.run_at for f in await pending_fires(engine)] == [due]
        clock.set(due)
        await drain()
        [execution] = await all_executions(engine)
        assert execution.trigger_event == "appointment.after_end"
        assert execution.status == "success"
        assert len(smtp.sink.messages) == 1


class TestDelayedActions:
    async def test_actions_wait_in_order_and_execution_stays_running(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        smtp: SmtpServer,
        twilio: Any,
    ) -> None:
        await create_rule(
            client,
            auth,
            {
                "name": "Welcome then nudge",
                "trigger_event": "patient.onboarded",
                "actions": [
                    {"type": "send_email", "template": "welcome_patient"},
                    {"type": "send_email", "template": "form_reminder", "delay_minutes": 30},
                    {
                        "type": "update_segment",
                        "segment_id": 3,
                        "action": "add",
                    },
                ],
            },
        )
        await post_event(client, auth, "patient.onboarded", {"patient": dict(PATIENT)})
        await drain()
        [execution] = await all_executions(engine)
        assert execution.status == "running"
        assert len(smtp.sink.messages) == 1

        clock.advance(minutes=29)
        await drain()
        assert len(smtp.sink.messages) == 1
        clock.advance(minutes=1)
        await drain()
        [execution] = await all_executions(engine)
        assert execution.status == "success"
        subjects = [m.message["Subject"] for m in smtp.sink.messages]
        assert len(subjects) == 2

    async def test_delayed_action_for_a_cancelled_appointment_is_skipped(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        smtp: SmtpServer,
    ) -> None:
        await create_rule(
            client,
            auth,
            {
                "name": "Booking confirmation later",
                "trigger_event": "appointment.booked",
                "actions": [
                    {"type": "send_email", "template": "appointment_reminder", "delay_minutes": 60}
                ],
            },
        )
        await book(client, auth, drain)
        await post_event(client, auth, "appointment.cancelled", {"appointment": {"id": 50}})
        clock.advance(minutes=60)
        await drain()
        [execution] = await all_executions(engine)
        assert execution.status == "success"
        r = await client.get(f"/v1/automations/executions/{execution.id}", headers=auth())
        [action] = r.json()["data"]["actions_executed"]
        assert action["status"] == "skipped"
        assert action["reason"] == "appointment cancelled"
        assert smtp.sink.messages == []

    async def test_an_action_after_a_delayed_one_is_checked_as_late_too(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        smtp: SmtpServer,
    ) -> None:
        """SPEC §6: the appointment behind a delayed action is re-read when it runs. The
        action after it runs an hour late as well, so a cancellation stops both."""
        await create_rule(
            client,
            auth,
            {
                "name": "Confirmation, then a note, later",
                "trigger_event": "appointment.booked",
                "actions": [
                    {"type": "send_email", "template": "appointment_reminder", "delay_minutes": 60},
                    {"type": "send_email", "template": "appointment_reminder"},
                ],
            },
        )
        await book(client, auth, drain)
        await post_event(client, auth, "appointment.cancelled", {"appointment": {"id": 50}})
        clock.advance(minutes=60)
        await drain()
        [execution] = await all_executions(engine)
        r = await client.get(f"/v1/automations/executions/{execution.id}", headers=auth())
        actions = r.json()["data"]["actions_executed"]
        assert [(a["status"], a.get("reason")) for a in actions] == [
            ("skipped", "appointment cancelled")
        ] * 2
        assert smtp.sink.messages == []

    async def test_an_undelayed_rule_still_runs_for_a_booking_cancelled_later(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        engine: AsyncEngine,
        smtp: SmtpServer,
    ) -> None:
        """Nothing waited: the actions ran when the booking arrived, before the cancellation."""
        await create_rule(
            client,
            auth,
            {
                "name": "Confirmation now",
                "trigger_event": "appointment.booked",
                "actions": [
                    {"type": "send_email", "template": "appointment_reminder"},
                    {"type": "send_email", "template": "appointment_reminder"},
                ],
            },
        )
        await book(client, auth, drain)
        [execution] = await all_executions(engine)
        assert execution.status == "success"
        assert len(smtp.sink.messages) == 2


class TestQuietHoursEndToEnd:
    async def test_evening_reminder_sms_waits_for_morning_in_each_zone(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        engine: AsyncEngine,
        twilio: Any,
        database_url: str,
        app: FastAPI,
    ) -> None:
        await create_rule(
            client,
            auth,
            {
                "name": "SMS reminder",
                "trigger_event": "appointment.before_start",
                "trigger_config": {"hours_before": 12},
                "actions": [{"type": "send_sms", "template": "appointment_reminder"}],
            },
        )
        # 22:00 UTC fire: 22:00 in London (quiet), 17:00 in New York (allowed).
        starts = datetime(2025, 2, 21, 10, 0, tzinfo=UTC)
        london = {**PATIENT, "id": 100, "timezone": "Europe/London"}
        new_york = {**PATIENT, "id": 101, "timezone": "America/New_York", "phone": "+12025550123"}
        for appt_id, patient in ((50, london), (51, new_york)):
            data = appointment(starts, appointment_id=appt_id)
            data["appointment"]["patient_id"] = patient["id"]
            data["patient"] = patient
            await post_event(client, auth, "appointment.booked", data)
        await drain()
        clock.set(starts - timedelta(hours=12))
        await drain()
        r = await client.get("/v1/messages?channel=sms", headers=auth())
        assert [m["patient_id"] for m in r.json()["data"]] == [101]

        clock.set(datetime(2025, 2, 21, 8, 0, tzinfo=UTC))  # 08:00 in London
        await drain()
        r = await client.get("/v1/messages?channel=sms", headers=auth())
        assert sorted(m["patient_id"] for m in r.json()["data"]) == [100, 101]
