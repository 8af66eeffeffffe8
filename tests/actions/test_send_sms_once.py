"""``send_sms`` against the Twilio fake: at most one message at the provider per action, the
status callback each SMS asks for, and numbers in E.164."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.actions.base import ActionOutcome, RetryableActionError
from careflow.actions.registry import EXECUTORS
from careflow.actions.send_sms import NOT_A_NUMBER
from careflow.config import Settings
from careflow.delivery.email import LogEmailTransport
from careflow.delivery.sms import TwilioSmsTransport
from careflow.delivery.transports import SERVICES_KEY, Transports
from careflow.executions.models import Execution
from careflow.kit.clock import FrozenClock
from careflow.messages.models import Message
from careflow.messages.repository import action_message_id
from careflow.organizations.models import OrganizationSettings
from tests.actions.conftest import ContextFor
from tests.fixtures.factories import create_execution
from tests.fixtures.twilio import TwilioFake

CONFIG = {"type": "send_sms", "template": "welcome_patient"}
PATIENT = {"id": 100, "first_name": "Alex", "phone": "+447700900123", "timezone": "Europe/London"}
PUBLIC_URL = "https://careflow.example"
executor = EXECUTORS["send_sms"]


@pytest.fixture
def sms_settings(twilio_settings: Settings) -> Settings:
    return twilio_settings.model_copy(update={"public_url": PUBLIC_URL})


@pytest.fixture
async def impatient(sms_settings: Settings) -> AsyncIterator[dict[str, Any]]:
    """Services whose Twilio client gives up after half a second (careflow's 15 s, shorter)."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(0.5)) as client:
        sms = TwilioSmsTransport(sms_settings, client)
        yield {SERVICES_KEY: Transports(email=LogEmailTransport(), sms=sms)}


async def run(
    context_for: ContextFor,
    session: AsyncSession,
    execution: Execution,
    settings: Settings,
    **overrides: Any,
) -> ActionOutcome:
    values: dict[str, Any] = {"settings": settings, "config": CONFIG, "patient": PATIENT}
    return await executor.execute(context_for(session, execution, **{**values, **overrides}))


async def messages(session: AsyncSession) -> list[Message]:
    return list((await session.execute(select(Message))).scalars())


class TestAtMostOneMessagePerAction:
    async def test_an_answer_lost_to_the_timeout_is_adopted_not_sent_again(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        sms_settings: Settings,
        impatient: dict[str, Any],
        context_for: ContextFor,
    ) -> None:
        twilio.stall_next = 1  # Twilio creates the message, its answer comes too late
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            outcome = await run(context_for, session, execution, sms_settings, services=impatient)
            await session.commit()
            [row] = await messages(session)
        twilio.release()

        [created] = twilio.created_to("+447700900123")
        assert len(twilio.requests) == 1
        assert outcome.status == "success"
        assert outcome.result == {"sms_id": row.id, "delivery_status": "queued"}
        assert (row.provider_message_id, row.status) == (created["sid"], "queued")
        # It was looked up, by the number, careflow's sender and the day.
        [lookup] = twilio.list_requests
        assert (lookup["To"], lookup["From"]) == ("+447700900123", "+15550001111")
        assert "DateSent>" in lookup

    async def test_a_later_run_adopts_what_a_rolled_back_run_sent(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        sms_settings: Settings,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            await session.commit()
            # The worker sends, then dies before it commits: careflow keeps no trace.
            first = await run(context_for, session, execution, sms_settings)
            await session.rollback()
            await session.refresh(execution)
            assert await messages(session) == []

            again = await run(context_for, session, execution, sms_settings, attempt=2)
            await session.commit()
            [row] = await messages(session)
        [request] = twilio.requests
        assert again.result == first.result == {"sms_id": row.id, "delivery_status": "queued"}
        assert row.provider_message_id == request["sid"]
        assert len(twilio.list_requests) == 1

    async def test_a_request_known_not_accepted_is_sent_again(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        sms_settings: Settings,
        context_for: ContextFor,
    ) -> None:
        twilio.fail_next = 1  # a 503: unknown, so looked up at once, and not there
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            await session.commit()
            with pytest.raises(RetryableActionError, match="503"):
                await run(context_for, session, execution, sms_settings)
            await session.rollback()
            await session.refresh(execution)
            assert len(twilio.list_requests) == 1

            outcome = await run(context_for, session, execution, sms_settings, attempt=2)
            await session.commit()
            [row] = await messages(session)
        [request] = twilio.requests
        assert outcome.status == "success"
        assert row.provider_message_id == request["sid"]
        assert len(twilio.list_requests) == 2  # looked up again before sending

    async def test_a_first_run_sends_without_looking_up(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        sms_settings: Settings,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            await run(context_for, session, execution, sms_settings, action_index=2)
            [row] = await messages(session)
        [request] = twilio.requests
        assert twilio.list_requests == []
        # The callback names careflow's message, whose id every run of the action shares.
        assert row.id == action_message_id("sms", execution.id, 2)
        assert request["form"]["StatusCallback"] == (
            f"{PUBLIC_URL}/v1/providers/twilio/status?message_id={row.id}"
        )


class TestPhoneNumbersInE164:
    @pytest.mark.parametrize(
        ("region", "phone", "sent_to"),
        [
            (None, "07700 900123", "+447700900123"),  # the service default, GB
            (None, "+44 (0)7700-900123", "+447700900123"),
            ("US", "(415) 555-0134", "+14155550134"),
            ("US", "+44 7700 900123", "+447700900123"),  # a country code wins over the region
        ],
    )
    async def test_numbers_are_sent_and_stored_in_e164(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        twilio_settings: Settings,
        context_for: ContextFor,
        region: str | None,
        phone: str,
        sent_to: str,
    ) -> None:
        async with maker() as session:
            if region is not None:
                session.add(
                    OrganizationSettings(
                        organization_id=1, default_region=region, updated_at=clock.now()
                    )
                )
            execution = await create_execution(session, now=clock.now())
            patient = {**PATIENT, "phone": phone}
            outcome = await run(context_for, session, execution, twilio_settings, patient=patient)
            [row] = await messages(session)
        [request] = twilio.requests
        assert outcome.status == "success"
        assert request["form"]["To"] == row.recipient == sent_to

    @pytest.mark.parametrize("phone", ["call me", "12", "+44 12"])
    async def test_a_number_that_does_not_parse_skips_the_sms(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        twilio: TwilioFake,
        twilio_settings: Settings,
        context_for: ContextFor,
        phone: str,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            patient = {**PATIENT, "phone": phone}
            outcome = await run(context_for, session, execution, twilio_settings, patient=patient)
            assert await messages(session) == []
        assert (outcome.status, outcome.reason) == ("skipped", NOT_A_NUMBER)
        assert phone not in NOT_A_NUMBER
        assert twilio.requests == []


class TestLogProvider:
    async def test_an_sms_in_the_log_is_sent_at_once(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        settings: Settings,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            outcome = await run(context_for, session, execution, settings)
            [row] = await messages(session)
        assert outcome.result == {"sms_id": row.id, "delivery_status": "sent"}
        assert (row.provider, row.status, row.queued_at, row.sent_at) == (
            "log",
            "sent",
            clock.now(),
            clock.now(),
        )
