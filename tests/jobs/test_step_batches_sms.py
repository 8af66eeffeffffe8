"""SMS steps in batches: sent once each through the provider fake, or deferred in the batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.actions.send_sms import HOURLY_LIMIT_REACHED
from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.executions.models import ExecutionAction
from careflow.executions.service import RUN_ACTION_KIND
from careflow.jobs.models import Job, JobStatus
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from careflow.messages.models import Message
from careflow.organizations.models import OrganizationSettings
from tests.conftest import make_settings
from tests.fixtures.database import count
from tests.fixtures.factories import PATIENT, create_rule, onboarded, post_event
from tests.fixtures.twilio import TwilioFake

Auth = Callable[..., dict[str, str]]
STEPS = 4

RULE = {
    "name": "Text new patients",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [
        {"type": "require_form", "form_template_id": 10, "blocking": True},
        {"type": "send_sms", "template": "welcome_patient"},
    ],
}


@pytest.fixture
def settings(database_url: str, twilio: TwilioFake) -> Settings:
    return make_settings(
        database_url,
        sms_provider="twilio",
        twilio_account_sid="AC123",
        twilio_auth_token="secret-token",
        twilio_from="+15550001111",
        twilio_base_url=twilio.base_url,
    )


async def _org_settings(engine: AsyncEngine, clock: FrozenClock, **fields: Any) -> None:
    """Organisation 1's settings, as an admin would have saved them."""
    async with create_sessionmaker(engine)() as session, session.begin():
        session.add(OrganizationSettings(organization_id=1, updated_at=clock.now(), **fields))


async def _run_sms_batch(
    client: httpx.AsyncClient, auth: Auth, app: FastAPI, settings: Settings, clock: FrozenClock
) -> list[str]:
    worker = Worker(app.state.sessionmaker, settings, clock, services=app.state.services)
    await create_rule(client, auth, RULE)
    for i in range(STEPS):
        patient = {**PATIENT, "id": 800 + i, "phone": f"+4477009000{i:02d}"}
        await post_event(client, auth, "patient.onboarded", onboarded(patient))
    dispatches = await worker.claim(100)
    assert await worker.run_batch(dispatches) == ["done"] * STEPS
    sends = await worker.claim(100)
    assert [job.payload["type"] for job in sends] == ["send_sms"] * STEPS
    return await worker.run_batch(sends)


async def test_sms_steps_in_one_batch_are_each_sent_once_and_keep_their_provider_id(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    twilio: TwilioFake,
    engine: AsyncEngine,
) -> None:
    assert await _run_sms_batch(client, auth, app, settings, clock) == ["done"] * STEPS
    numbers = [request["form"]["To"] for request in twilio.requests]
    assert len(numbers) == STEPS and len(set(numbers)) == STEPS
    async with create_sessionmaker(engine)() as session:
        sids = set(await session.scalars(select(Message.provider_message_id)))
    assert sids == {request["sid"] for request in twilio.requests}
    assert await count(engine, ExecutionAction, ExecutionAction.status == "success") == 2 * STEPS


async def test_sms_steps_in_quiet_hours_are_deferred_in_the_batch(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    twilio: TwilioFake,
    engine: AsyncEngine,
) -> None:
    # The clock's 10:00 in London falls in this organisation's quiet 09-17.
    await _org_settings(engine, clock, quiet_hours_start=9, quiet_hours_end=17)

    assert await _run_sms_batch(client, auth, app, settings, clock) == ["done"] * STEPS
    assert twilio.requests == []
    async with create_sessionmaker(engine)() as session:
        statuses = Counter(
            await session.scalars(
                select(ExecutionAction.status).where(ExecutionAction.type == "send_sms")
            )
        )
        queued = list(
            await session.scalars(
                select(Job).where(Job.kind == RUN_ACTION_KIND, Job.status == JobStatus.QUEUED)
            )
        )
    assert statuses == Counter({"deferred": STEPS})
    assert len(queued) == STEPS  # each step waits for the end of the quiet hours
    assert {job.run_at for job in queued} == {queued[0].run_at}
    assert all(job.run_at > clock.now() for job in queued)


async def test_the_hourly_sms_limit_counts_the_texts_sent_earlier_in_the_batch(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    twilio: TwilioFake,
    engine: AsyncEngine,
) -> None:
    await _org_settings(engine, clock, sms_hourly_limit=2)

    # The first two steps send; their rows are still held when the third counts, and count.
    outcomes = await _run_sms_batch(client, auth, app, settings, clock)

    assert outcomes == ["done"] * STEPS
    assert len(twilio.requests) == 2
    async with create_sessionmaker(engine)() as session:
        rows = list(
            await session.scalars(select(ExecutionAction).where(ExecutionAction.type == "send_sms"))
        )
    assert Counter(row.status for row in rows) == Counter({"success": 2, "deferred": STEPS - 2})
    # The others wait for a place in the hour, not fail: they go once the two are an hour old.
    waiting = [row for row in rows if row.status == "deferred"]
    assert {row.result["reason"] for row in waiting} == {HOURLY_LIMIT_REACHED}
    assert {row.scheduled_for for row in waiting} == {clock.now() + timedelta(hours=1)}

    clock.advance(timedelta(hours=1))
    worker = Worker(app.state.sessionmaker, settings, clock, services=app.state.services)
    assert await worker.run_until_idle() == STEPS - 2
    assert len(twilio.requests) == STEPS
    assert await count(engine, ExecutionAction, ExecutionAction.status == "success") == 2 * STEPS
