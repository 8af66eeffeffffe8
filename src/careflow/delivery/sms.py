"""SMS transports: Twilio's REST Messages API, and a log-only one for the embedded default."""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

import httpx
import structlog

from careflow import tracing
from careflow.config import Settings
from careflow.delivery.errors import PermanentDeliveryError, TransientDeliveryError

log = structlog.get_logger("careflow.delivery.sms")


class SmsTransport(Protocol):
    #: stored as the message's ``provider``
    provider: str

    async def send(self, *, to: str, body: str, idempotency_key: str) -> str:
        """Hand one SMS to the provider and return the provider's id for it."""
        ...


class LogSmsTransport:
    """Sends nothing: the message row in careflow's own log is the only record."""

    provider = "log"

    async def send(self, *, to: str, body: str, idempotency_key: str) -> str:
        log.info("sms_logged", idempotency_key=idempotency_key)
        return f"log-{idempotency_key}"


class TwilioSmsTransport:
    """POST to ``/2010-04-01/Accounts/{sid}/Messages.json``.

    The idempotency header makes Twilio answer a retried request with the message it
    already created, so a job rerun after a lost response does not text twice.
    """

    provider = "twilio"

    def __init__(self, settings: Settings, client: httpx.AsyncClient | None = None) -> None:
        missing = [
            name
            for name, value in (
                ("CAREFLOW_TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                ("CAREFLOW_TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
                ("CAREFLOW_TWILIO_FROM", settings.twilio_from),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"the twilio SMS provider needs {', '.join(missing)}")
        self.account_sid: str = settings.twilio_account_sid  # type: ignore[assignment]
        self.auth_token: str = settings.twilio_auth_token  # type: ignore[assignment]
        self.sender: str = settings.twilio_from  # type: ignore[assignment]
        base = settings.twilio_base_url.rstrip("/")
        self.url = f"{base}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}/Messages.json"
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0))
        # A client span per call to Twilio: its URL and status, not the form it posts.
        tracing.instrument_httpx_client(self.client)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def send(self, *, to: str, body: str, idempotency_key: str) -> str:
        try:
            response = await self.client.post(
                self.url,
                data={"To": to, "From": self.sender, "Body": body},
                auth=(self.account_sid, self.auth_token),
                headers={"I-Twilio-Idempotency-Token": idempotency_key},
            )
        except httpx.TimeoutException:
            raise TransientDeliveryError("Twilio did not answer in time") from None
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"Twilio unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise TransientDeliveryError(f"Twilio is unavailable (HTTP {status})")
        if status >= 400:
            # Twilio's message text can quote the phone number; its numeric code cannot.
            raise PermanentDeliveryError(
                f"Twilio refused the message (HTTP {status}, code {_twilio_code(response)})"
            )
        try:
            sid = response.json().get("sid")
        except (ValueError, AttributeError):
            sid = None
        if not isinstance(sid, str) or not sid:
            raise TransientDeliveryError(f"Twilio answered HTTP {status} without a message sid")
        log.info("sms_sent", idempotency_key=idempotency_key, provider=self.provider)
        return sid


def _twilio_code(response: httpx.Response) -> str:
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return "unknown"
    return str(code) if isinstance(code, int) else "unknown"
