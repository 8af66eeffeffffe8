from __future__ import annotations

from typing import Any

from careflow.delivery.email import LogEmailTransport, SmtpTransport
from careflow.delivery.sms import LogSmsTransport, TwilioSmsTransport
from careflow.delivery.transports import (
    Transports,
    build_transports,
    close_transports,
    get_transports,
)
from tests.conftest import make_settings


class TestBuildTransports:
    def test_defaults_are_the_message_log(self, database_url: str) -> None:
        transports = build_transports(make_settings(database_url))
        assert isinstance(transports.email, LogEmailTransport)
        assert isinstance(transports.sms, LogSmsTransport)

    async def test_smtp_and_twilio_when_configured(self, database_url: str) -> None:
        settings = make_settings(
            database_url,
            smtp_url="smtp://127.0.0.1:2525",
            sms_provider="twilio",
            twilio_account_sid="AC1",
            twilio_auth_token="t",
            twilio_from="+15550000",
        )
        transports = build_transports(settings)
        try:
            assert isinstance(transports.email, SmtpTransport)
            assert isinstance(transports.sms, TwilioSmsTransport)
            assert (transports.email.provider, transports.sms.provider) == ("smtp", "twilio")
        finally:
            await transports.aclose()


class TestGetTransports:
    def test_built_once_per_services_dict(self, database_url: str) -> None:
        services: dict[str, Any] = {}
        settings = make_settings(database_url)
        first = get_transports(services, settings)
        assert get_transports(services, settings) is first
        assert services["transports"] is first

    def test_a_preset_object_wins(self, database_url: str) -> None:
        preset = Transports(email=LogEmailTransport(), sms=LogSmsTransport())
        services: dict[str, Any] = {"transports": preset}
        assert get_transports(services, make_settings(database_url, smtp_url="smtp://x")) is preset

    async def test_shutdown_closes_only_transports_built_here(self, database_url: str) -> None:
        preset = Transports(email=LogEmailTransport(), sms=LogSmsTransport())
        theirs: dict[str, Any] = {"transports": preset}
        await close_transports(theirs)
        assert theirs["transports"] is preset

        ours: dict[str, Any] = {}
        get_transports(ours, make_settings(database_url))
        await close_transports(ours)
        assert ours == {}
