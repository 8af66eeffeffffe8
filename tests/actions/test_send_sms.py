from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.actions.base import RetryableActionError
from careflow.actions.registry import EXECUTORS
from careflow.config import Settings
from careflow.executions.models import Execution
from careflow.jobs.errors import DeferJob
from careflow.kit.clock import FrozenClock
from careflow.messages.models import Message
from careflow.organizations.models import OrganizationSettings
from tests.actions.conftest import ContextFor
from tests.conftest import make_settings
from tests.fixtures.factories import create_execution
from tests.fixtures.twilio import TwilioFake

CONFIG = {"type": "send_sms", "template": "welcome_patient"}
PATIENT = {"id": 100, "first_name": "Alex", "phone": "+447700900123", "timezone": "Europe/London"}
executor = EXECUTORS["send_sms"]


async def messages(session: AsyncSession) -> list[Message]:
    return list((await session.execute(select(Message))).scalars())


Run = Callable[..., Any]


@pytest.fixture
def run_sms(twilio_settings: Settings, context_for: ContextFor) -> Callable[..., Any]:
    """``await run_sms(session, execution, **overrides)``: the executor run once on ``CONFIG``
    for ``PATIENT`` through the Twilio fake; ``overrides`` replace any part of the context."""

    async def run(session: AsyncSession, execution: Execution, **overrides: Any) -> Any:
        defaults = {"settings": twilio_settings, "config": CONFIG, "patient": PATIENT}
        return await executor.execute(
            context_for(session, execution, **{**defaults, **overrides})
        )

    return run


class TestSendSms:
    async def test_sends_once_through_twilio_with_an_idempotency_key(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        run_sms: Run,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            outcome = await run_sms(session, execution, action_index=3)
            await session.commit()
            assert outcome.status == "success"
            sms_id = outcome.result["sms_id"]
            assert sms_id.startswith("sms_")

            [request] = twilio.requests
            assert request["path"] == "/2010-04-01/Accounts/AC123/Messages.json"
            assert request["idempotency_key"] == f"exec-{execution.id}-action-3"
            assert request["form"]["To"] == "+447700900123"
            assert request["form"]["From"] == "+15550001111"
            assert request["form"]["Body"].startswith("Hi Alex, welcome!")
            assert request["auth"].startswith("Basic ")

            [row] = await messages(session)
            assert (row.id, row.channel, row.status, row.provider) == (
                sms_id,
                "sms",
                "sent",
                "twilio",
            )
            assert row.provider_message_id == request["sid"]
            assert (row.execution_id, row.action_index, row.recipient) == (
                execution.id,
                3,
                "+447700900123",
            )
            assert row.subject is None

            again = await run_sms(session, execution, action_index=3)
            assert again.result == {"sms_id": sms_id}
        assert len(twilio.requests) == 1

    @pytest.mark.parametrize(
        ("patient", "reason"),
        [
            (None, "no phone number"),
            ({"id": 100}, "no phone number"),
            (
                {"id": 100, "phone": "+447700900123", "sms_opt_out": True},
                "patient opted out of SMS",
            ),
        ],
    )
    async def test_skips_without_a_reachable_phone(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        run_sms: Run,
        patient: dict[str, Any] | None,
        reason: str,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            outcome = await run_sms(session, execution, patient=patient)
            assert (outcome.status, outcome.reason) == ("skipped", reason)
        assert twilio.requests == []

    async def test_provider_outage_is_retried_then_fails_on_the_last_attempt(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        run_sms: Run,
    ) -> None:
        twilio.fail_next = 2
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            await session.commit()
            with pytest.raises(RetryableActionError, match="503"):
                await run_sms(session, execution)
            await session.rollback()
            await session.refresh(execution)
            outcome = await run_sms(session, execution, attempt=3, is_last_attempt=True)
            await session.commit()
            assert outcome.status == "failure"
            assert outcome.error == "Twilio is unavailable (HTTP 503)"
            [row] = await messages(session)
            assert (row.status, row.attempts) == ("failed", 3)
        assert twilio.requests == []


class TestQuietHours:
    @pytest.mark.parametrize(
        ("tz", "now", "resume"),
        [
            # 22:30 GMT → 08:00 GMT the next morning.
            (
                "Europe/London",
                datetime(2025, 1, 15, 22, 30, tzinfo=UTC),
                datetime(2025, 1, 16, 8, 0, tzinfo=UTC),
            ),
            # 21:30 UTC is 22:30 BST → 08:00 BST is 07:00 UTC.
            (
                "Europe/London",
                datetime(2025, 7, 1, 21, 30, tzinfo=UTC),
                datetime(2025, 7, 2, 7, 0, tzinfo=UTC),
            ),
            # 10:00 UTC is 05:00 EST → 08:00 EST is 13:00 UTC.
            (
                "America/New_York",
                datetime(2025, 2, 15, 10, 0, tzinfo=UTC),
                datetime(2025, 2, 15, 13, 0, tzinfo=UTC),
            ),
            # 03:00 UTC is 23:00 EDT → 08:00 EDT is 12:00 UTC.
            (
                "America/New_York",
                datetime(2025, 7, 2, 3, 0, tzinfo=UTC),
                datetime(2025, 7, 2, 12, 0, tzinfo=UTC),
            ),
        ],
    )
    async def test_deferred_to_the_next_allowed_minute(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        run_sms: Run,
        tz: str,
        now: datetime,
        resume: datetime,
    ) -> None:
        clock.set(now)
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            with pytest.raises(DeferJob) as deferred:
                await run_sms(session, execution, patient={**PATIENT, "timezone": tz})
            assert deferred.value.until == resume
            assert deferred.value.reason == "quiet hours"
            assert await messages(session) == []
            # At the resume time the same action sends.
            clock.set(resume)
            outcome = await run_sms(session, execution, patient={**PATIENT, "timezone": tz})
            assert outcome.status == "success"
        assert len(twilio.requests) == 1

    async def test_no_timezone_means_utc(
        self, maker: async_sessionmaker[AsyncSession], clock: FrozenClock, run_sms: Run
    ) -> None:
        clock.set(datetime(2025, 2, 15, 23, 0, tzinfo=UTC))
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            patient = {key: value for key, value in PATIENT.items() if key != "timezone"}
            with pytest.raises(DeferJob) as deferred:
                await run_sms(session, execution, patient=patient)
        assert deferred.value.until == datetime(2025, 2, 16, 8, 0, tzinfo=UTC)

    async def test_organisation_overrides_the_window(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        run_sms: Run,
    ) -> None:
        # T0 is 10:00 in London: allowed by default, quiet in this organisation's 09-17.
        async with maker() as session:
            session.add(
                OrganizationSettings(
                    organization_id=1,
                    quiet_hours_start=9,
                    quiet_hours_end=17,
                    updated_at=clock.now(),
                )
            )
            execution = await create_execution(session, now=clock.now())
            with pytest.raises(DeferJob) as deferred:
                await run_sms(session, execution)
            assert deferred.value.until == datetime(2025, 2, 15, 17, 0, tzinfo=UTC)

            other_org = await create_execution(session, org=2, now=clock.now())
            outcome = await run_sms(session, other_org)
            assert outcome.status == "success"
        assert len(twilio.requests) == 1


class TestHourlyLimit:
    async def add_sent_sms(self, session: AsyncSession, org: int, sent_at: datetime) -> None:
        session.add(
            Message(
                id=f"sms_{org}_{sent_at.timestamp():.0f}",
                organization_id=org,
                channel="sms",
                recipient="+15550002222",
                template="welcome_patient",
                body="hello",
                status="sent",
                provider="twilio",
                attempts=1,
                created_at=sent_at,
                sent_at=sent_at,
            )
        )
        await session.flush()

    async def test_organisation_cap_defers_until_a_place_frees(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        run_sms: Run,
    ) -> None:
        async with maker() as session:
            session.add(
                OrganizationSettings(organization_id=1, sms_hourly_limit=2, updated_at=clock.now())
            )
            # Older than an hour: no longer counts. Another organisation's: never counts.
            await self.add_sent_sms(session, 1, clock.now() - timedelta(minutes=61))
            await self.add_sent_sms(session, 2, clock.now() - timedelta(minutes=5))
            await self.add_sent_sms(session, 1, clock.now() - timedelta(minutes=30))

            first = await create_execution(session, now=clock.now())
            assert (await run_sms(session, first)).status == "success"

            # Two in the last hour (30 minutes ago and now): the next waits, not fails,
            # until the older one leaves the window.
            second = await create_execution(session, now=clock.now())
            with pytest.raises(DeferJob) as deferred:
                await run_sms(session, second)
            assert deferred.value.until == clock.now() + timedelta(minutes=30)
            assert deferred.value.reason == "SMS hourly limit reached"
        assert len(twilio.requests) == 1

    async def test_a_cap_of_zero_fails_at_once(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        run_sms: Run,
    ) -> None:
        async with maker() as session:
            session.add(
                OrganizationSettings(organization_id=1, sms_hourly_limit=0, updated_at=clock.now())
            )
            execution = await create_execution(session, now=clock.now())
            outcome = await run_sms(session, execution)
        assert (outcome.status, outcome.error) == ("failure", "SMS hourly limit reached")
        assert twilio.requests == []

    async def test_service_default_cap(
        self,
        maker: async_sessionmaker[AsyncSession],
        database_url: str,
        clock: FrozenClock,
        run_sms: Run,
    ) -> None:
        settings = make_settings(database_url, sms_hourly_limit=1)
        async with maker() as session:
            await self.add_sent_sms(session, 1, clock.now() - timedelta(minutes=1))
            execution = await create_execution(session, now=clock.now())
            with pytest.raises(DeferJob) as deferred:
                await run_sms(session, execution, settings=settings)
        assert deferred.value.until == clock.now() + timedelta(minutes=59)


class TestSendSmsPreview:
    async def test_preview(self, maker: async_sessionmaker[AsyncSession]) -> None:
        async with maker() as session:
            preview = await executor.preview(session, 1, CONFIG, {"patient": PATIENT})
            skipped = await executor.preview(
                session, 1, CONFIG, {"patient": {**PATIENT, "sms_opt_out": True}}
            )
        assert preview == {"template": "welcome_patient", "would_send_to": "+447700900123"}
        assert skipped == {
            "template": "welcome_patient",
            "would_send_to": None,
            "skip_reason": "patient opted out of SMS",
        }
