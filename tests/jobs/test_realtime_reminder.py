"""One reminder on the wall clock: the worker wakes for a future fire by itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.app import create_app
from careflow.config import Settings
from tests.fixtures.factories import PATIENT, create_rule, post_event
from tests.fixtures.smtp import SmtpServer

Auth = Callable[..., dict[str, str]]


@pytest.fixture
async def live_client(settings: Settings, engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    """The app as `careflow serve` runs it: real clock, worker inside the process."""
    app = create_app(settings, engine=engine, run_worker=True, migrate_sqlite=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://careflow.test") as c:
            yield c


def z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class TestRealTimeReminder:
    async def test_email_arrives_within_seconds_of_its_fire_time(
        self, live_client: httpx.AsyncClient, auth: Auth, smtp: SmtpServer
    ) -> None:
        await create_rule(
            live_client,
            auth,
            {
                "name": "One hour before",
                "trigger_event": "appointment.before_start",
                "trigger_config": {"hours_before": 1},
                "actions": [{"type": "send_email", "template": "appointment_reminder"}],
            },
        )
        fire_at = datetime.now(UTC) + timedelta(seconds=3)
        starts = fire_at + timedelta(hours=1)
        await post_event(
            live_client,
            auth,
            "appointment.booked",
            {
                "appointment": {
                    "id": 77,
                    "patient_id": PATIENT["id"],
                    "starts_at": z(starts),
                    "ends_at": z(starts + timedelta(minutes=30)),
                },
                "patient": dict(PATIENT),
            },
        )
        deadline = time.monotonic() + 20
        while not smtp.sink.messages and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # polling a condition with a deadline
        arrived = datetime.now(UTC)
        assert len(smtp.sink.messages) == 1, "the reminder never reached the SMTP server"
        lag = (arrived - fire_at).total_seconds()
        assert -0.5 <= lag < 5, f"reminder arrived {lag:.2f}s after its fire time"
