"""Choosing the transports from settings, once per process."""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from careflow.config import Settings
from careflow.delivery.email import EmailTransport, LogEmailTransport, SmtpTransport
from careflow.delivery.sms import LogSmsTransport, SmsTransport, TwilioSmsTransport

SERVICES_KEY = "transports"
_BUILT_KEY = "transports_built_here"


@dataclass(slots=True)
class Transports:
    email: EmailTransport
    sms: SmsTransport

    async def aclose(self) -> None:
        for transport in (self.email, self.sms):
            close = getattr(transport, "aclose", None)
            if close is not None:
                await close()


def build_transports(settings: Settings) -> Transports:
    """SMTP when ``CAREFLOW_SMTP_URL`` is set, else the log; Twilio or the log for SMS."""
    email: EmailTransport = SmtpTransport(settings) if settings.smtp_url else LogEmailTransport()
    sms: SmsTransport = (
        TwilioSmsTransport(settings) if settings.sms_provider == "twilio" else LogSmsTransport()
    )
    return Transports(email=email, sms=sms)


def get_transports(services: MutableMapping[str, Any], settings: Settings) -> Transports:
    """The process's transports, built on first use and kept in the app's or worker's services.

    A test (or the CLI) may put its own ``Transports`` under ``"transports"`` beforehand.
    """
    transports = services.get(SERVICES_KEY)
    if transports is None:
        transports = build_transports(settings)
        services[SERVICES_KEY] = transports
        services[_BUILT_KEY] = True
    return transports  # type: ignore[no-any-return]


async def close_transports(services: MutableMapping[str, Any]) -> None:
    """At shutdown: close the connections of the transports ``get_transports`` built.

    Transports someone else put in ``services`` are theirs to close.
    """
    if services.pop(_BUILT_KEY, False):
        transports = services.pop(SERVICES_KEY, None)
        if transports is not None:
            await transports.aclose()
