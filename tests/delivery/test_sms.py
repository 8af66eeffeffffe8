from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from careflow.config import Settings
from careflow.delivery import sms
from careflow.delivery.errors import (
    AmbiguousDeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from careflow.delivery.sms import LogSmsTransport, TwilioSmsTransport
from tests.conftest import make_settings
from tests.fixtures.smtp import free_port
from tests.fixtures.twilio import TwilioFake

PHONE = "+15550100"
SID = "AC0123456789"
TOKEN = "twilio-token"


def twilio_settings(database_url: str, base_url: str) -> Settings:
    return make_settings(
        database_url,
        sms_provider="twilio",
        twilio_account_sid=SID,
        twilio_auth_token=TOKEN,
        twilio_from="+15559999",
        twilio_base_url=base_url,
    )


def answering(status: int, body: dict[str, object]) -> httpx.AsyncClient:
    """A client whose network answers every request with one canned response."""
    return httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    )


class TestTwilioSmsTransport:
    async def test_posts_the_message_with_auth_and_its_status_callback(
        self, twilio: TwilioFake, database_url: str
    ) -> None:
        transport = TwilioSmsTransport(twilio_settings(database_url, twilio.base_url))
        callback = "https://careflow.example/v1/providers/twilio/status?message_id=sms_1"
        try:
            sid = await transport.send(
                to=PHONE, body="See you at 10", idempotency_key="exec-7-1", status_callback=callback
            )
        finally:
            await transport.aclose()

        [request] = twilio.requests
        assert sid == request["sid"]
        assert request["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
        assert request["form"] == {
            "To": PHONE,
            "From": "+15559999",
            "Body": "See you at 10",
            "StatusCallback": callback,
        }
        assert request["auth"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        # Twilio's Messages API defines no idempotency header: careflow sends none.
        assert not any(name.lower().startswith("i-twilio") for name in request["headers"])

    async def test_a_503_leaves_it_unknown(self, twilio: TwilioFake, database_url: str) -> None:
        twilio.fail_next = 1
        async with httpx.AsyncClient() as client:
            transport = TwilioSmsTransport(twilio_settings(database_url, twilio.base_url), client)
            with pytest.raises(AmbiguousDeliveryError) as failed:
                await transport.send(to=PHONE, body="b", idempotency_key="k")
            assert "503" in str(failed.value)
            assert twilio.requests == []

            sid = await transport.send(to=PHONE, body="b", idempotency_key="k")
        assert sid == twilio.requests[0]["sid"]

    async def test_a_429_is_known_not_accepted(self, database_url: str) -> None:
        async with answering(429, {"code": 20429}) as client:
            transport = TwilioSmsTransport(twilio_settings(database_url, "http://twilio"), client)
            with pytest.raises(TransientDeliveryError) as failed:
                await transport.send(to=PHONE, body="b", idempotency_key="k")
        assert not isinstance(failed.value, AmbiguousDeliveryError)

    async def test_a_400_is_permanent_and_does_not_quote_the_number(
        self, database_url: str
    ) -> None:
        refusal = {"code": 21211, "message": f"The 'To' number {PHONE} is not a valid number."}
        async with answering(400, refusal) as client:
            transport = TwilioSmsTransport(twilio_settings(database_url, "http://twilio"), client)
            with pytest.raises(PermanentDeliveryError) as failed:
                await transport.send(to=PHONE, body="b", idempotency_key="k")
        assert "21211" in str(failed.value)
        assert PHONE not in str(failed.value)

    async def test_an_answer_after_the_timeout_leaves_it_unknown_though_it_was_created(
        self, twilio: TwilioFake, database_url: str
    ) -> None:
        twilio.stall_next = 1
        settings = twilio_settings(database_url, twilio.base_url)
        async with httpx.AsyncClient(timeout=httpx.Timeout(0.5)) as client:
            transport = TwilioSmsTransport(settings, client)
            with pytest.raises(AmbiguousDeliveryError, match="did not answer in time"):
                await transport.send(to=PHONE, body="b", idempotency_key="k")
        twilio.release()
        assert len(twilio.created_to(PHONE)) == 1

    async def test_an_unreachable_api_is_known_not_accepted(self, database_url: str) -> None:
        settings = twilio_settings(database_url, f"http://127.0.0.1:{free_port()}")
        transport = TwilioSmsTransport(settings)
        try:
            with pytest.raises(TransientDeliveryError) as failed:
                await transport.send(to=PHONE, body="b", idempotency_key="k")
        finally:
            await transport.aclose()
        assert not isinstance(failed.value, AmbiguousDeliveryError)

    async def test_a_connection_lost_after_the_request_leaves_it_unknown(
        self, database_url: str
    ) -> None:
        def dropped(request: httpx.Request) -> httpx.Response:
            raise httpx.RemoteProtocolError("server disconnected", request=request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(dropped)) as client:
            transport = TwilioSmsTransport(twilio_settings(database_url, "http://twilio"), client)
            with pytest.raises(AmbiguousDeliveryError):
                await transport.send(to=PHONE, body="b", idempotency_key="k")


class TestFindSent:
    async def test_finds_the_message_by_number_sender_day_and_body(
        self, twilio: TwilioFake, database_url: str
    ) -> None:
        settings = twilio_settings(database_url, twilio.base_url)
        other = twilio_settings(database_url, twilio.base_url).model_copy(
            update={"twilio_from": "+15558888"}
        )
        transport = TwilioSmsTransport(settings)
        elsewhere = TwilioSmsTransport(other)
        try:
            first = await transport.send(to=PHONE, body="See you at 10", idempotency_key="a")
            await transport.send(to=PHONE, body="Another text", idempotency_key="b")
            await transport.send(to="+15550199", body="See you at 10", idempotency_key="c")
            await elsewhere.send(to=PHONE, body="See you at 10", idempotency_key="d")
            second = await transport.send(to=PHONE, body="See you at 10", idempotency_key="e")
            yesterday = datetime.now(UTC) - timedelta(days=1)
            found = await transport.find_sent(to=PHONE, body="See you at 10", since=yesterday)
            tomorrow = datetime.now(UTC) + timedelta(days=1)
            later = await transport.find_sent(to=PHONE, body="See you at 10", since=tomorrow)
        finally:
            await transport.aclose()
            await elsewhere.aclose()
        assert found == [first, second]  # oldest first
        assert later == []
        query = twilio.list_requests[0]
        assert (query["To"], query["From"]) == (PHONE, "+15559999")
        assert query["DateSent>"] == yesterday.date().isoformat()

    async def test_reads_every_page(
        self, twilio: TwilioFake, database_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sms, "LOOKUP_PAGE_SIZE", 2)
        transport = TwilioSmsTransport(twilio_settings(database_url, twilio.base_url))
        try:
            sids = [
                await transport.send(to=PHONE, body="same", idempotency_key=str(i))
                for i in range(3)
            ]
            found = await transport.find_sent(
                to=PHONE, body="same", since=datetime.now(UTC) - timedelta(hours=1)
            )
        finally:
            await transport.aclose()
        assert found == sids
        assert len(twilio.list_requests) == 2

    async def test_an_unreachable_list_is_transient(self, database_url: str) -> None:
        settings = twilio_settings(database_url, f"http://127.0.0.1:{free_port()}")
        transport = TwilioSmsTransport(settings)
        try:
            with pytest.raises(TransientDeliveryError):
                await transport.find_sent(to=PHONE, body="b", since=datetime.now(UTC))
        finally:
            await transport.aclose()

    def test_missing_credentials_are_a_configuration_error(self, database_url: str) -> None:
        with pytest.raises(ValueError, match="CAREFLOW_TWILIO_AUTH_TOKEN"):
            TwilioSmsTransport(
                make_settings(database_url, sms_provider="twilio", twilio_account_sid=SID)
            )


class TestLogSmsTransport:
    async def test_returns_a_log_id(self, twilio: TwilioFake) -> None:
        assert await LogSmsTransport().send(to=PHONE, body="b", idempotency_key="k1") == "log-k1"
        assert await LogSmsTransport().find_sent(to=PHONE, body="b", since=datetime.now(UTC)) == []
        assert twilio.requests == []
