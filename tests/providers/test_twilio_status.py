"""``POST /v1/providers/twilio/status``: Twilio's signed status callbacks move an SMS along
queued → sent → delivered | undelivered | failed, never back, and a request without
Twilio's signature changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.delivery.sms import TwilioSmsTransport
from careflow.jobs.models import Job, JobStatus
from careflow.kit.clock import FrozenClock
from careflow.messages.models import Message
from careflow.providers.service import HELD_STATUS_KIND
from tests.conftest import Drain, make_settings
from tests.fixtures.database import count
from tests.fixtures.factories import PATIENT, create_rule, onboarded, post_event
from tests.fixtures.twilio import Callback, TwilioFake

Auth = Callable[..., dict[str, str]]
PUBLIC_URL = "https://careflow.example"
RULE = {
    "name": "Text new patients",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [{"type": "send_sms", "template": "welcome_patient"}],
}


@pytest.fixture
def settings(database_url: str, twilio: TwilioFake) -> Settings:
    return make_settings(
        database_url,
        sms_provider="twilio",
        twilio_account_sid="AC123",
        twilio_auth_token=twilio.auth_token,
        twilio_from="+15550001111",
        twilio_base_url=twilio.base_url,
        public_url=PUBLIC_URL,
    )


async def deliver(client: httpx.AsyncClient, callback: Callback) -> httpx.Response:
    """POST the callback to careflow as Twilio would."""
    return await client.post(callback.url, data=callback.form, headers=callback.headers)


async def sent_sms(client: httpx.AsyncClient, auth: Auth, drain: Drain) -> dict[str, Any]:
    """One welcome SMS sent through the fake; careflow's message for it."""
    await create_rule(client, auth, RULE)
    await post_event(client, auth, "patient.onboarded", onboarded({**PATIENT, "id": 100}))
    await drain()
    [message] = (await client.get("/v1/messages?channel=sms", headers=auth())).json()["data"]
    return message  # type: ignore[no-any-return]


async def message_of(client: httpx.AsyncClient, auth: Auth, message_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/messages/{message_id}", headers=auth("specialist"))
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def action_result(client: httpx.AsyncClient, auth: Auth, execution_id: int) -> dict[str, Any]:
    response = await client.get(f"/v1/automations/executions/{execution_id}", headers=auth())
    [action] = response.json()["data"]["actions_executed"]
    return action  # type: ignore[no-any-return]


class TestStatusCallbacks:
    async def test_sent_then_delivered_move_the_status_and_a_late_sent_does_not_undo_it(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        twilio: TwilioFake,
    ) -> None:
        message = await sent_sms(client, auth, drain)
        sid = message["provider_message_id"]
        queued_at = clock.now()
        assert (message["status"], message["queued_at"]) == ("queued", "2025-02-15T10:00:00Z")
        [request] = twilio.requests
        assert request["form"]["StatusCallback"] == (
            f"{PUBLIC_URL}/v1/providers/twilio/status?message_id={message['id']}"
        )
        action = await action_result(client, auth, message["execution_id"])
        assert (action["sms_id"], action["delivery_status"]) == (message["id"], "queued")

        clock.advance(timedelta(seconds=5))
        sent = twilio.status_callback(sid, "sent")
        assert (await deliver(client, sent)).status_code == 204
        after_sent = await message_of(client, auth, message["id"])
        assert (after_sent["status"], after_sent["sent_at"]) == ("sent", "2025-02-15T10:00:05Z")

        clock.advance(timedelta(seconds=5))
        r = await deliver(client, twilio.status_callback(sid, "delivered"))
        assert r.status_code == 204
        delivered = await message_of(client, auth, message["id"])
        assert delivered["status"] == "delivered"
        assert (delivered["queued_at"], delivered["sent_at"], delivered["delivered_at"]) == (
            queued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "2025-02-15T10:00:05Z",
            "2025-02-15T10:00:10Z",
        )
        action = await action_result(client, auth, message["execution_id"])
        assert (action["status"], action["delivery_status"]) == ("success", "delivered")

        # Twilio retries the "sent" callback late: delivered stays.
        clock.advance(timedelta(seconds=5))
        assert (await deliver(client, sent)).status_code == 204
        assert await message_of(client, auth, message["id"]) == delivered
        action = await action_result(client, auth, message["execution_id"])
        assert action["delivery_status"] == "delivered"

    async def test_delivered_before_sent_keeps_delivered_and_learns_when_it_was_sent(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        twilio: TwilioFake,
    ) -> None:
        message = await sent_sms(client, auth, drain)
        sid = message["provider_message_id"]
        sent = twilio.status_callback(sid, "sent")
        delivered = twilio.status_callback(sid, "delivered")
        assert (await deliver(client, delivered)).status_code == 204
        clock.advance(timedelta(seconds=1))
        assert (await deliver(client, sent)).status_code == 204
        row = await message_of(client, auth, message["id"])
        assert (row["status"], row["delivered_at"], row["sent_at"]) == (
            "delivered",
            "2025-02-15T10:00:00Z",
            "2025-02-15T10:00:01Z",
        )

    @pytest.mark.parametrize("status", ["undelivered", "failed"])
    async def test_a_failure_records_the_providers_error_code(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        twilio: TwilioFake,
        status: str,
    ) -> None:
        message = await sent_sms(client, auth, drain)
        callback = twilio.status_callback(
            message["provider_message_id"], status, error_code="30003"
        )
        assert (await deliver(client, callback)).status_code == 204
        row = await message_of(client, auth, message["id"])
        assert (row["status"], row["error_code"], row["failed_at"]) == (
            status,
            "30003",
            "2025-02-15T10:00:00Z",
        )
        action = await action_result(client, auth, message["execution_id"])
        assert action["delivery_status"] == status

    async def test_a_message_whose_answer_was_lost_adopts_the_sid_its_callback_names(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        clock: FrozenClock,
        settings: Settings,
        twilio: TwilioFake,
    ) -> None:
        # careflow gave up on the message (its last try timed out); Twilio had made it.
        message_id = "sms_" + "ab" * 12
        async with create_sessionmaker(engine)() as session, session.begin():
            session.add(
                Message(
                    id=message_id,
                    organization_id=1,
                    channel="sms",
                    recipient="+447700900123",
                    template="welcome_patient",
                    body="Hi",
                    status="failed",
                    provider="twilio",
                    error="Twilio did not answer in time",
                    attempts=5,
                    created_at=clock.now(),
                )
            )
        transport = TwilioSmsTransport(settings)
        try:
            sid = await transport.send(
                to="+447700900123",
                body="Hi",
                idempotency_key="k",
                status_callback=f"{PUBLIC_URL}/v1/providers/twilio/status?message_id={message_id}",
            )
        finally:
            await transport.aclose()

        assert (await deliver(client, twilio.status_callback(sid, "delivered"))).status_code == 204
        row = await message_of(client, auth, message_id)
        assert (row["provider_message_id"], row["status"], row["error"]) == (
            sid,
            "delivered",
            None,
        )

    async def test_a_callback_that_outruns_the_message_is_held_and_applied_once_it_is_there(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        clock: FrozenClock,
        drain: Drain,
        settings: Settings,
        twilio: TwilioFake,
    ) -> None:
        # Twilio made the message and reports it before careflow has recorded it (the
        # send's job has not committed): Twilio sends each callback once only.
        message_id = "sms_" + "cd" * 12
        sid = await send_through_twilio(settings, message_id)
        sent = twilio.status_callback(sid, "sent")
        delivered = twilio.status_callback(sid, "delivered")
        arrived = clock.now()
        assert (await deliver(client, sent)).status_code == 202
        clock.advance(seconds=1)
        assert (await deliver(client, delivered)).status_code == 202
        assert await count(engine, Message) == 0
        assert await count(engine, Job, Job.kind == HELD_STATUS_KIND) == 2
        # Held while there is no message: looked for again, not given up.
        clock.advance(seconds=5)
        await drain()
        assert await count(engine, Job, Job.kind == HELD_STATUS_KIND) == 2

        # The send's job commits (the answer was lost; the lookup adopted the SID).
        async with create_sessionmaker(engine)() as session, session.begin():
            session.add(queued_message(message_id, sid, clock.now()))
        clock.advance(seconds=30)
        await drain()

        row = await message_of(client, auth, message_id)
        assert (row["provider_message_id"], row["status"]) == (sid, "delivered")
        # Each step as of when its callback arrived, not when it was applied.
        assert row["sent_at"] == arrived.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert await count(engine, Job, Job.kind == HELD_STATUS_KIND) == 0

    async def test_a_held_callback_whose_message_never_comes_is_dropped_after_an_hour(
        self,
        client: httpx.AsyncClient,
        engine: AsyncEngine,
        clock: FrozenClock,
        drain: Drain,
        settings: Settings,
        twilio: TwilioFake,
    ) -> None:
        unknown = "sms_" + "ef" * 12
        sid = await send_through_twilio(settings, unknown)
        assert (await deliver(client, twilio.status_callback(sid, "delivered"))).status_code == 202
        await drain(until_settled=True, step_minutes=5, max_steps=20)
        assert await count(engine, Job, Job.kind == HELD_STATUS_KIND) == 0
        assert await count(engine, Job, Job.status == JobStatus.DEAD) == 0
        assert await count(engine, Message) == 0


async def send_through_twilio(settings: Settings, message_id: str) -> str:
    """Have the fake make a message whose callbacks name careflow's ``message_id``."""
    transport = TwilioSmsTransport(settings)
    try:
        return await transport.send(
            to="+447700900123",
            body="Hi",
            idempotency_key="k",
            status_callback=f"{PUBLIC_URL}/v1/providers/twilio/status?message_id={message_id}",
        )
    finally:
        await transport.aclose()


def queued_message(message_id: str, sid: str, now: datetime) -> Message:
    return Message(
        id=message_id,
        organization_id=1,
        channel="sms",
        recipient="+447700900123",
        template="welcome_patient",
        body="Hi",
        status="queued",
        provider="twilio",
        provider_message_id=sid,
        attempts=1,
        created_at=now,
        queued_at=now,
    )


class TestSignature:
    async def forged(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain, twilio: TwilioFake
    ) -> tuple[dict[str, Any], Callback]:
        message = await sent_sms(client, auth, drain)
        return message, twilio.status_callback(message["provider_message_id"], "delivered")

    @pytest.mark.parametrize(
        "tamper",
        [
            pytest.param(lambda c, t: (c.form, {"X-Twilio-Signature": "bm90IGl0"}), id="wrong"),
            pytest.param(lambda c, t: (c.form, {}), id="missing"),
            pytest.param(
                lambda c, t: (
                    c.form,
                    t.status_callback(
                        c.form["MessageSid"], "delivered", auth_token="other"
                    ).headers,
                ),
                id="another-token",
            ),
            pytest.param(
                lambda c, t: ({**c.form, "MessageStatus": "failed"}, c.headers), id="altered-form"
            ),
        ],
    )
    async def test_a_bad_or_missing_signature_is_403_and_changes_nothing(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        twilio: TwilioFake,
        tamper: Callable[[Callback, TwilioFake], tuple[dict[str, str], dict[str, str]]],
    ) -> None:
        message, callback = await self.forged(client, auth, drain, twilio)
        before = await message_of(client, auth, message["id"])
        form, headers = tamper(callback, twilio)
        r = await client.post(callback.url, data=form, headers=headers)
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "forbidden"
        assert await message_of(client, auth, message["id"]) == before
        assert before["status"] == "queued"
        action = await action_result(client, auth, message["execution_id"])
        assert action["delivery_status"] == "queued"

    async def test_a_signature_for_another_url_is_refused(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain, twilio: TwilioFake
    ) -> None:
        message, callback = await self.forged(client, auth, drain, twilio)
        # Signed for this message, replayed against another message's URL.
        other = callback.url.replace(message["id"], "sms_" + "cd" * 12)
        r = await client.post(other, data=callback.form, headers=callback.headers)
        assert r.status_code == 403

    async def test_without_a_public_url_nothing_passes(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        twilio: TwilioFake,
        app: Any,
        settings: Settings,
    ) -> None:
        message, callback = await self.forged(client, auth, drain, twilio)
        app.state.settings = settings.model_copy(update={"public_url": None})
        r = await deliver(client, callback)
        assert r.status_code == 403
        assert (await message_of(client, auth, message["id"]))["status"] == "queued"
