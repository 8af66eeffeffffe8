"""``POST /v1/providers/twilio/inbound``: texts patients send to an organisation's number.

STOP opts the phone out (a delayed SMS to it is skipped when it comes due), START opts it
back in, HELP changes nothing, and anything else is a ``message.received`` event about the
patient with that phone, which rules and pathway rules act on. A text to a number no
organisation holds is a 404, one Twilio did not sign a 403: neither stores anything.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.config import Settings
from careflow.events.models import Event
from careflow.kit.clock import FrozenClock
from careflow.patients.models import SmsOptOut
from tests.conftest import Drain, make_settings
from tests.fixtures.database import count
from tests.fixtures.factories import (
    PATIENT,
    create_pathway_rule,
    create_rule,
    onboarded,
    post_event,
)
from tests.fixtures.twilio import AUTH_TOKEN, TwilioFake, twilio_signature

Auth = Callable[..., dict[str, str]]
PUBLIC_URL = "https://careflow.example"
INBOUND = "/v1/providers/twilio/inbound"
ACCOUNT = "AC123"
PRACTICE_NUMBER = "+447700900000"
# The patient's phone as the host wrote it (national format) and in E.164.
HOST_PHONE = "07700 900123"
PHONE = "+447700900123"
DELAYED_SMS_RULE = {
    "name": "Text new patients an hour later",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [{"type": "send_sms", "template": "welcome_patient", "delay_minutes": 60}],
}


@pytest.fixture
def settings(database_url: str, twilio: TwilioFake) -> Settings:
    return make_settings(
        database_url,
        sms_provider="twilio",
        twilio_account_sid=ACCOUNT,
        twilio_auth_token=twilio.auth_token,
        twilio_from="+15550001111",
        twilio_base_url=twilio.base_url,
        public_url=PUBLIC_URL,
        default_region="GB",
    )


def signed(
    body: str, *, sender: str = PHONE, to: str = PRACTICE_NUMBER, token: str | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """An inbound text's form and headers, signed as Twilio signs its webhook requests."""
    form = {
        "AccountSid": ACCOUNT,
        "MessageSid": "SM" + uuid.uuid4().hex,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "SmsStatus": "received",
    }
    signature = twilio_signature(token or AUTH_TOKEN, PUBLIC_URL + INBOUND, form)
    return form, {"X-Twilio-Signature": signature}


async def text(client: httpx.AsyncClient, body: str, **kwargs: Any) -> httpx.Response:
    form, headers = signed(body, **kwargs)
    return await client.post(INBOUND, data=form, headers=headers)


async def set_numbers(client: httpx.AsyncClient, auth: Auth, *numbers: str, org: int = 1) -> None:
    r = await client.put(
        "/v1/organization/settings", json={"sms_numbers": list(numbers)}, headers=auth(org=org)
    )
    assert r.status_code == 200, r.text


async def onboard(client: httpx.AsyncClient, auth: Auth) -> None:
    await post_event(client, auth, "patient.onboarded", onboarded({**PATIENT, "phone": HOST_PHONE}))


async def preferences(client: httpx.AsyncClient, auth: Auth) -> dict[str, Any]:
    r = await client.get(f"/v1/patients/{PATIENT['id']}/preferences", headers=auth())
    assert r.status_code == 200, r.text
    return r.json()["data"]["sms"]  # type: ignore[no-any-return]


async def sms_action(client: httpx.AsyncClient, auth: Auth) -> dict[str, Any]:
    r = await client.get("/v1/automations/executions", headers=auth())
    [execution] = r.json()["data"]
    r = await client.get(f"/v1/automations/executions/{execution['id']}", headers=auth())
    [action] = r.json()["data"]["actions_executed"]
    return action  # type: ignore[no-any-return]


def is_twiml(response: httpx.Response) -> bool:
    return (
        response.status_code == 200
        and response.headers["content-type"].startswith("text/xml")
        and response.text.endswith("<Response/>")
    )


class TestStop:
    @pytest.mark.parametrize(
        "word", ["STOP", " stop ", "StopAll", "unsubscribe", "Cancel", "END", "quit", "S TOP"]
    )
    async def test_a_stop_word_opts_the_phone_out(
        self, client: httpx.AsyncClient, auth: Auth, word: str
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        await onboard(client, auth)
        assert is_twiml(await text(client, word))
        sms = await preferences(client, auth)
        assert (sms["opted_out"], sms["source"]) == (True, "sms_stop")

    async def test_a_delayed_sms_to_a_phone_that_texted_stop_is_skipped(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        twilio: TwilioFake,
        engine: AsyncEngine,
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        await create_rule(client, auth, DELAYED_SMS_RULE)
        await onboard(client, auth)
        await drain()
        assert is_twiml(await text(client, "STOP"))
        # The host sends a snapshot without the flag: careflow's record stands.
        await post_event(
            client, auth, "patient.updated", {"patient": {**PATIENT, "phone": HOST_PHONE}}
        )
        clock.advance(timedelta(minutes=61))
        await drain()
        action = await sms_action(client, auth)
        assert (action["status"], action["reason"]) == ("skipped", "phone replied STOP")
        assert twilio.requests == []
        # The audit names the patient by id; no phone anywhere in it.
        entries = [
            e for e in await _audit(client, auth) if e["object_type"] == "patient_preferences"
        ]
        assert [(e["object_id"], e["after"]) for e in entries] == [
            ("100", {"channel": "sms", "opted_out": True, "source": "sms_stop"})
        ]
        assert "7700" not in str(entries)
        assert await count(engine, SmsOptOut) == 1

    async def test_start_opts_back_in_and_the_sms_goes(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        clock: FrozenClock,
        twilio: TwilioFake,
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        await create_rule(client, auth, DELAYED_SMS_RULE)
        await onboard(client, auth)
        await drain()
        assert is_twiml(await text(client, "STOP"))
        assert is_twiml(await text(client, "Start"))
        sms = await preferences(client, auth)
        assert (sms["opted_out"], sms["source"]) == (False, "host")
        clock.advance(timedelta(minutes=61))
        await drain()
        action = await sms_action(client, auth)
        assert action["status"] == "success"
        assert [r["form"]["To"] for r in twilio.requests] == [PHONE]

    @pytest.mark.parametrize("word", ["UNSTOP", "yes"])
    async def test_start_synonyms(self, client: httpx.AsyncClient, auth: Auth, word: str) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        await onboard(client, auth)
        await text(client, "STOP")
        assert is_twiml(await text(client, word))
        assert (await preferences(client, auth))["opted_out"] is False

    async def test_help_changes_nothing(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        await onboard(client, auth)
        assert is_twiml(await text(client, "HELP"))
        assert (await preferences(client, auth))["opted_out"] is False
        await text(client, "STOP")
        assert is_twiml(await text(client, "help"))
        assert (await preferences(client, auth))["opted_out"] is True
        assert await count(engine, Event, Event.type == "message.received") == 0

    async def test_stop_holds_for_the_organisation_whose_number_was_texted(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        await set_numbers(client, auth, "+447700900001", org=2)
        assert is_twiml(await text(client, "STOP", to="+447700900001"))
        async with engine.connect() as connection:
            rows = (await connection.execute(SmsOptOut.__table__.select())).all()
        assert [(row.organization_id, row.phone) for row in rows] == [(2, PHONE)]


class TestReplies:
    async def test_a_reply_is_a_message_received_event_a_pathway_rule_routes(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        engine: AsyncEngine,
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        await onboard(client, auth)
        await create_pathway_rule(
            client,
            auth,
            trigger_type="message.received",
            rule_name="Texted replies go to the nurses",
            conditions={"channels": ["sms"]},
            suggested_assignment="usr_nurses",
            suggested_priority="high",
        )
        r = await text(client, "Can I move my appointment to Friday?")
        assert is_twiml(r)
        await drain()
        r = await client.get("/v1/episodes", params={"journey_type": "messages"}, headers=auth())
        [episode] = r.json()["data"]
        assert (
            episode["patient_id"],
            episode["suggested_assignment"],
            episode["suggested_priority"],
            episode["expected_next_actor"],
        ) == (100, "usr_nurses", "high", "practice")
        async with engine.connect() as connection:
            [event] = (
                await connection.execute(
                    Event.__table__.select().where(Event.type == "message.received")
                )
            ).all()
        message = event.data["message"]
        assert (message["patient_id"], message["from"], message["channel"]) == (100, PHONE, "sms")
        assert message["body"] == "Can I move my appointment to Friday?"
        # The body is the patient's: it is in the event, not in the audit log.
        assert "Friday" not in str(await _audit(client, auth))

    async def test_twilio_retrying_a_reply_stores_one_event(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        form, headers = signed("Thanks!")
        for _ in range(2):
            assert is_twiml(await client.post(INBOUND, data=form, headers=headers))
        assert await count(engine, Event, Event.type == "message.received") == 1

    async def test_a_reply_from_an_unknown_phone_is_an_event_without_a_patient(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        await onboard(client, auth)
        assert is_twiml(await text(client, "Who is this?", sender="+447700900999"))
        async with engine.connect() as connection:
            [event] = (await connection.execute(Event.__table__.select())).all()[-1:]
        assert "patient_id" not in event.data["message"]


class TestRefused:
    async def test_an_unknown_to_number_is_404_and_nothing_is_stored(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        for body in ("STOP", "hello"):
            r = await text(client, body, to="+447700900555")
            assert r.status_code == 404, r.text
        assert await count(engine, Event) == 0
        assert await count(engine, SmsOptOut) == 0
        assert (
            await count(engine, AuditEntry, AuditEntry.object_type != "organization_settings") == 0
        )

    @pytest.mark.parametrize("signature", [None, "forged", "other-token"])
    async def test_a_bad_signature_is_403_and_nothing_is_stored(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine, signature: str | None
    ) -> None:
        await set_numbers(client, auth, PRACTICE_NUMBER)
        for body in ("STOP", "hello"):
            form, headers = signed(body, token="other-token")
            if signature is None:
                headers = {}
            elif signature == "forged":
                headers = {"X-Twilio-Signature": "Zm9yZ2Vk"}
            r = await client.post(INBOUND, data=form, headers=headers)
            assert r.status_code == 403, r.text
        assert await count(engine, Event) == 0
        assert await count(engine, SmsOptOut) == 0


async def _audit(client: httpx.AsyncClient, auth: Auth) -> list[dict[str, Any]]:
    r = await client.get("/v1/audit-log", params={"limit": 100}, headers=auth())
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]
