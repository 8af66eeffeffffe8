"""Email transports: SMTP for real delivery, a log-only one for the embedded default.

Every SMTP message is an ``email.message.EmailMessage`` (headers encoded and folded, header
injection refused, the body's transfer encoding chosen by the standard library) sent with
``aiosmtplib``'s ``send_message`` on a kept connection. Writing plain messages' bytes and
the MAIL, RCPT and DATA commands by hand saves about 4 % of a worker's CPU at full load:
under the 10 % of an end-to-end or ingestion figure for which code that re-does a
maintained library's work would be kept, so the libraries do it.
What stays careflow's own is what the libraries do not do: the pool of kept connections,
the timeout, the Message-ID that is the same on every retry, and the classification of SMTP
failures as transient or permanent (``delivery/errors.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import structlog

from careflow.config import Settings
from careflow.delivery.errors import PermanentDeliveryError, TransientDeliveryError

log = structlog.get_logger("careflow.delivery.email")


class EmailTransport(Protocol):
    #: stored as the message's ``provider``
    provider: str

    async def send(
        self,
        *,
        to: str,
        subject: str,
        body: str,
        message_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Hand one message to the provider and return the provider's id for it."""
        ...


def message_id_for(execution_id: int, action_index: int, domain: str = "careflow") -> str:
    """The Message-ID of an action's email: the same on every retry, so duplicates are visible."""
    return f"<exec-{execution_id}.action-{action_index}@{domain}>"


def _bare(message_id: str) -> str:
    return message_id.strip().removeprefix("<").removesuffix(">")


class LogEmailTransport:
    """Sends nothing: the message row in careflow's own log is the only record."""

    provider = "log"

    async def send(
        self,
        *,
        to: str,
        subject: str,
        body: str,
        message_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        log.info("email_logged", message_id=message_id)
        return f"log-{_bare(message_id)}"


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """``smtp://user:pass@host:port``; ``smtps://`` is implicit TLS; ``?starttls=1`` upgrades."""
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("CAREFLOW_SMTP_URL must start with smtp:// or smtps://")
        if not parts.hostname:
            raise ValueError("CAREFLOW_SMTP_URL has no host")
        use_tls = parts.scheme == "smtps"
        flag = parse_qs(parts.query).get("starttls", ["0"])[-1].lower()
        start_tls = flag in ("1", "true", "yes", "on")
        if use_tls and start_tls:
            raise ValueError("CAREFLOW_SMTP_URL: smtps:// and ?starttls=1 exclude each other")
        default_port = 465 if use_tls else (587 if start_tls else 25)
        return cls(
            hostname=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=start_tls,
        )


def _classify(code: int, what: str) -> PermanentDeliveryError | TransientDeliveryError:
    # SMTP's own split: 4xx means "try again later", 5xx means "this will never work".
    if 400 <= code < 500:
        return TransientDeliveryError(f"SMTP {what}: temporary failure ({code})")
    return PermanentDeliveryError(f"SMTP {what}: refused ({code})")


def _now_header() -> str:
    """The Date header's value: now, to the second."""
    return format_datetime(datetime.now(UTC).replace(microsecond=0))


class SmtpTransport:
    """Delivers over SMTP, keeping a few connections open for the next messages.

    Opening a connection costs a TCP handshake, a greeting, EHLO (and TLS or AUTH when
    configured) and QUIT: several round trips per message. Connections are reused instead,
    up to ``MAX_IDLE`` kept idle, each for at most ``IDLE_SECONDS``. Any error closes the
    connection it happened on. A kept connection that the server has meanwhile dropped is
    noticed on its first command, and the message goes on a new connection.
    """

    provider = "smtp"
    MAX_IDLE = 8
    IDLE_SECONDS = 20.0

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_url:
            raise ValueError("SmtpTransport needs CAREFLOW_SMTP_URL")
        self.config = SmtpConfig.from_url(settings.smtp_url)
        self.sender = settings.email_from
        self.timeout = settings.smtp_timeout_seconds
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._local_hostname: str | None = None

    def build_message(
        self,
        *,
        to: str,
        subject: str,
        body: str,
        message_id: str,
        headers: Mapping[str, str] | None = None,
        date: str | None = None,
    ) -> EmailMessage:
        message = EmailMessage()
        try:
            message["From"] = self.sender
            message["To"] = to
            message["Subject"] = subject
            message["Message-ID"] = message_id
            message["Date"] = date or _now_header()
            for name, value in (headers or {}).items():
                message[name] = value
        except (ValueError, TypeError) as exc:
            # A newline or malformed address in a header: the same input fails every time.
            raise PermanentDeliveryError(
                f"email headers are not valid ({type(exc).__name__})"
            ) from None
        message.set_content(body)
        return message

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._local_hostname is None:
            # What EHLO names us; left to aiosmtplib, it is looked up on every connection.
            loop = asyncio.get_running_loop()
            self._local_hostname = await loop.run_in_executor(None, socket.getfqdn)
        cfg = self.config
        client = aiosmtplib.SMTP(
            hostname=cfg.hostname,
            port=cfg.port,
            username=cfg.username,
            password=cfg.password,
            use_tls=cfg.use_tls,
            start_tls=cfg.start_tls,
            timeout=self.timeout,
            local_hostname=self._local_hostname,
        )
        await client.connect()
        return client

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and now - since < self.IDLE_SECONDS:
                return client
            client.close()
        return None

    def _give_back(self, client: aiosmtplib.SMTP) -> None:
        if len(self._idle) < self.MAX_IDLE and client.is_connected:
            self._idle.append((client, time.monotonic()))
        else:
            client.close()

    async def _deliver(self, message: EmailMessage) -> None:
        kept = self._take_idle()
        if kept is not None:
            try:
                await kept.send_message(message)
            except aiosmtplib.SMTPServerDisconnected:
                kept.close()  # dropped while idle: nothing was accepted on it
            except BaseException:
                kept.close()
                raise
            else:
                self._give_back(kept)
                return
        client = await self._connect()
        try:
            await client.send_message(message)
        except BaseException:
            client.close()
            raise
        self._give_back(client)

    async def aclose(self) -> None:
        while self._idle:
            client, _ = self._idle.pop()
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
            client.close()

    async def send(
        self,
        *,
        to: str,
        subject: str,
        body: str,
        message_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        message = self.build_message(
            to=to, subject=subject, body=body, message_id=message_id, headers=headers
        )
        try:
            await self._deliver(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients] or [550]
            raise _classify(min(codes), "recipient") from None
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPServerDisconnected,
        ) as exc:
            raise TransientDeliveryError(f"SMTP connection failed ({type(exc).__name__})") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _classify(exc.code, "server") from None
        except aiosmtplib.SMTPException as exc:
            raise TransientDeliveryError(f"SMTP error ({type(exc).__name__})") from None
        except OSError as exc:  # refused connections and timeouts alike
            raise TransientDeliveryError(f"SMTP connection failed ({type(exc).__name__})") from None
        log.info("email_sent", message_id=message_id, provider=self.provider)
        return _bare(message_id)
