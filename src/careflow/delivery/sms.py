"""SMS transports: Twilio's REST Messages API, and a log-only one for the embedded default.

Twilio's Messages resource has no idempotency key: a create request it accepted but whose
answer careflow lost would, sent again, text the patient twice. So a transport tells
apart a failure that proves the provider did not accept the request (it could not be
reached, it answered 429, which slows careflow down (``RateLimitedDeliveryError``), or 4xx) from one that leaves it unknown
(``AmbiguousDeliveryError``), and can look a message up in the provider's list
(``find_sent``) so the caller adopts it instead of creating a second one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import structlog

from careflow import tracing
from careflow.config import Settings
from careflow.delivery.errors import (
    AmbiguousDeliveryError,
    PermanentDeliveryError,
    RateLimitedDeliveryError,
    TransientDeliveryError,
)

log = structlog.get_logger("careflow.delivery.sms")

# Pages of the provider's list read when looking a message up: 50 messages each, newest
# first, from careflow's number to one patient since the first try.
LOOKUP_PAGE_SIZE = 50
LOOKUP_MAX_PAGES = 4
# The longest Retry-After careflow heeds; a longer one is read as this.
MAX_RETRY_AFTER_SECONDS = 3600.0


class SmsTransport(Protocol):
    #: stored as the message's ``provider``
    provider: str
    #: True when the provider reports delivery later (the message is ``queued`` until it
    #: does); False when handing it over is all there is (``sent``)
    reports_status: bool

    async def send(
        self, *, to: str, body: str, idempotency_key: str, status_callback: str | None = None
    ) -> str:
        """Hand one SMS to the provider and return the provider's id for it.

        Raises ``AmbiguousDeliveryError`` when the provider may have created it all the same.
        """
        ...

    async def find_sent(self, *, to: str, body: str, since: datetime) -> list[str]:
        """The provider's ids of the messages with this body it holds to ``to`` from
        careflow's number since ``since`` (the day of it), oldest first."""
        ...


class LogSmsTransport:
    """Sends nothing: the message row in careflow's own log is the only record."""

    provider = "log"
    reports_status = False

    async def send(
        self, *, to: str, body: str, idempotency_key: str, status_callback: str | None = None
    ) -> str:
        log.info("sms_logged", idempotency_key=idempotency_key)
        return f"log-{idempotency_key}"

    async def find_sent(self, *, to: str, body: str, since: datetime) -> list[str]:
        return []  # sending to the log cannot half-fail


class TwilioSmsTransport:
    """POST to ``/2010-04-01/Accounts/{sid}/Messages.json`` to send; GET it, filtered by
    ``To``, ``From`` and ``DateSent``, to look a message up."""

    provider = "twilio"
    reports_status = True

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
        self.base = settings.twilio_base_url.rstrip("/")
        self.url = (
            f"{self.base}/2010-04-01/Accounts/{quote(self.account_sid, safe='')}/Messages.json"
        )
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(15.0, connect=5.0))
        # A client span per call to Twilio: its URL and status, not the form it posts.
        tracing.instrument_httpx_client(self.client)

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def send(
        self, *, to: str, body: str, idempotency_key: str, status_callback: str | None = None
    ) -> str:
        form = {"To": to, "From": self.sender, "Body": body}
        if status_callback is not None:
            form["StatusCallback"] = status_callback
        try:
            response = await self.client.post(
                self.url, data=form, auth=(self.account_sid, self.auth_token)
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # No connection, so no request: Twilio cannot have created anything.
            raise TransientDeliveryError(f"Twilio unreachable ({type(exc).__name__})") from None
        except httpx.TimeoutException:
            raise AmbiguousDeliveryError("Twilio did not answer in time") from None
        except httpx.TransportError as exc:
            raise AmbiguousDeliveryError(
                f"connection to Twilio lost ({type(exc).__name__})"
            ) from None
        status = response.status_code
        if status == 429:
            # Twilio never processes a request it answers 429 (code 20429): safe to send
            # again, once careflow has slowed down.
            raise RateLimitedDeliveryError(
                f"Twilio is rate limiting (HTTP 429, code {_twilio_code(response)})",
                retry_after=retry_after(response.headers.get("retry-after")),
            )
        if status >= 500:
            raise AmbiguousDeliveryError(f"Twilio is unavailable (HTTP {status})")
        if status >= 400:
            # Twilio's message text can quote the phone number; its numeric code cannot.
            raise PermanentDeliveryError(
                f"Twilio refused the message (HTTP {status}, code {_twilio_code(response)})"
            )
        sid = _field(response, "sid")
        if sid is None:
            raise AmbiguousDeliveryError(f"Twilio answered HTTP {status} without a message sid")
        log.info("sms_sent", idempotency_key=idempotency_key, provider=self.provider)
        return sid

    async def find_sent(self, *, to: str, body: str, since: datetime) -> list[str]:
        params: dict[str, Any] | None = {
            "To": to,
            "From": self.sender,
            # Twilio's "on or after this day" filter (DateSent>=YYYY-MM-DD).
            "DateSent>": since.date().isoformat(),
            "PageSize": LOOKUP_PAGE_SIZE,
        }
        url = self.url
        found: list[str] = []
        for _ in range(LOOKUP_MAX_PAGES):
            try:
                response = await self.client.get(
                    url, params=params, auth=(self.account_sid, self.auth_token)
                )
            except httpx.TransportError as exc:
                raise TransientDeliveryError(
                    f"Twilio's message list unreachable ({type(exc).__name__})"
                ) from None
            if response.status_code != 200:
                raise TransientDeliveryError(
                    f"Twilio's message list answered HTTP {response.status_code}"
                )
            try:
                page = response.json()
                messages = page.get("messages") or []
            except (ValueError, AttributeError):
                raise TransientDeliveryError("Twilio's message list was not JSON") from None
            found.extend(
                m["sid"]
                for m in messages
                if isinstance(m, dict) and m.get("body") == body and isinstance(m.get("sid"), str)
            )
            next_page = page.get("next_page_uri")
            if not isinstance(next_page, str) or not next_page:
                break
            url, params = f"{self.base}{next_page}", None
        found.reverse()  # Twilio lists newest first
        return found


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header's delay in seconds (up to ``MAX_RETRY_AFTER_SECONDS``), or
    None when there is none or it is not a number of seconds (an HTTP date is not read: the
    transport has no clock of careflow's to measure it against)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN, or a negative delay
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def _field(response: httpx.Response, name: str) -> str | None:
    try:
        value = response.json().get(name)
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _twilio_code(response: httpx.Response) -> str:
    try:
        code = response.json().get("code")
    except (ValueError, AttributeError):
        return "unknown"
    return str(code) if isinstance(code, int) else "unknown"
