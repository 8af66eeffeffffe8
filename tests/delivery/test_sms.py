from __future__ import annotations

import base64

import httpx
import pytest

from careflow.config import Settings
from careflow.delivery.errors import PermanentDeliveryError, TransientDeliveryError
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
    async def test_posts_the_message_with_auth_and_idempotency_token(
        self, twilio: TwilioFake, database_url: str
    ) -> None:
        transport = TwilioSmsTransport(twilio_settings(database_url, twilio.base_url))
        try:
            sid = await transport.send(to=PHONE, body="See you at 10", idempotency_key="exec-7-1")
        finally:
            await transport.aclose()

        [request] = twilio.requests
        assert sid == request["sid"]
        assert request["path"] == f"/2010-04-01/Accounts/{SID}/Messages.json"
        assert request["form"] == {"To": PHONE, "From": "+15559999", "Body": "See you at 10"}
        assert request["auth"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        assert request["idempotency_key"] == "exec-7-1"

    async def test_a_503_is_transient(self, twilio: TwilioFake, database_url: str) -> None:
        twilio.fail_next = 1
        async with httpx.AsyncClient() as client:
            transport = TwilioSmsTransport(twilio_settings(database_url, twilio.base_url), client)
            with pytest.raises(TransientDeliveryError) as failed:
                await transport.send(to=PHONE, body="b", idempotency_key="k")
            assert "503" in str(failed.value)
            assert twilio.requests == []

            sid = await transport.send(to=PHONE, body="b", idempotency_key="k")
        assert sid == twilio.requests[0]["sid"]

    async def test_a_429_is_transient(self, database_url: str) -> None:
        async with answering(429, {"code": 20429}) as client:
            transport = TwilioSmsTransport(twilio_settings(database_url, "http://twilio"), client)
            with pytest.raises(TransientDeliveryError):
                await transport.send(to=PHONE, body="b", idempotency_key="k")

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

    async def test_a_timeout_is_transient(self, database_url: str) -> None:
        def slow(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("timed out", request=request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
            transport = TwilioSmsTransport(twilio_settings(database_url, "http://twilio"), client)
            with pytest.raises(TransientDeliveryError):
                await transport.send(to=PHONE, body="b", idempotency_key="k")

    async def test_an_unreachable_api_is_transient(self, database_url: str) -> None:
        settings = twilio_settings(database_url, f"http://127.0.0.1:{free_port()}")
        transport = TwilioSmsTransport(settings)
        try:
            with pytest.raises(TransientDeliveryError):
                await transport.send(to=PHONE, body="b", idempotency_key="k")
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
        assert twilio.requests == []
