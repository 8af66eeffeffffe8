"""Email transports: SMTP for real delivery, a log-only one for the embedded default.

An email is its text, optionally with an HTML alternative (then ``multipart/alternative``,
text first), and extra headers (``Reply-To``, ``Auto-Submitted``, ``List-Unsubscribe``…).

A plain message (an ASCII sender, a bare ASCII recipient, short printable headers, an ASCII
text and HTML) is written as bytes (``email_message.plain_message``) and sent with MAIL, RCPT and
DATA on a kept connection (``SmtpTransport._send_plain``): the same DATA that
``EmailMessage`` gives, without the standard library's header parsing and folding and
without ``aiosmtplib``'s ``sendmail`` parsing each address twice. Every other message goes
through ``EmailMessage`` and ``aiosmtplib``.

Why this is kept rather than left to the libraries: measured side by side on PostgreSQL
(``bench/perf/e2e.py --drain``, 2,000 events, 2 workers, the same tree with only this module
swapped, alternated), the libraries' path drained 277-321 executions/s at 5.5-6.1 ms of
worker CPU an execution, this one 433-498/s at 3.6-4.1 ms: about 55 % of the end-to-end
figure, far above the 10 % for which code that re-does a maintained library's work is kept.
``tests/delivery/test_email.py`` holds the two paths to the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import structlog

from careflow import tracing
from careflow.config import Settings
from careflow.delivery.email_message import (
    ADDR_SPEC,
    VERBATIM_HEADERS,
    Verbatim,
    new_boundary,
    now_header,
    plain_message,
    verbatim_value,
)
from careflow.delivery.errors import (
    PermanentDeliveryError,
    RateLimitedDeliveryError,
    TransientDeliveryError,
)

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
        html: str | None = None,
    ) -> str:
        """Hand one message to the provider and return the provider's id for it.

        ``html``, when given, is the HTML alternative of ``body``.
        """
        ...


def message_id_for(installation_id: str, execution_id: int, action_index: int, domain: str) -> str:
    """The Message-ID of an action's email: the same on every retry, so duplicates are
    visible, and never another deployment's (``installation_id`` is this one's)."""
    return f"<exec-{execution_id}.action-{action_index}.{installation_id}@{domain}>"


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
        html: str | None = None,
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


# The server's answers that say "slow down": 421 (service not available, closing the
# connection: too many connections or messages) and 451 (local error, try later: how relays
# answer a sender over its rate) to the connection, MAIL or DATA. A 451 to one recipient's
# RCPT is that mailbox's trouble, and stays a transient failure of the message.
RATE_CODES = frozenset({421, 451})


def _classify(code: int, what: str) -> PermanentDeliveryError | TransientDeliveryError:
    # SMTP's own split: 4xx means "try again later", 5xx means "this will never work".
    if 400 <= code < 500:
        return TransientDeliveryError(f"SMTP {what}: temporary failure ({code})")
    return PermanentDeliveryError(f"SMTP {what}: refused ({code})")


def _rate_limited(code: int) -> RateLimitedDeliveryError:
    return RateLimitedDeliveryError(f"SMTP server: slow down ({code})")


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
        # The From line and envelope sender, as EmailMessage and aiosmtplib derive them:
        # the sender is fixed, so they are worked out once.
        # A sender EmailMessage refuses leaves every message to it, to fail as before, and
        # so does a non-ASCII address, which needs SMTPUTF8 (send_message asks for it).
        self._from_line: str | None = None
        self._envelope_from = self.sender
        probe = EmailMessage()
        # Not only ValueError: the stdlib's header folder raises AttributeError on some
        # display names (".9*#Z <a@b.cd>"), as every send_message of them would.
        with contextlib.suppress(Exception):
            probe["From"] = self.sender
            envelope_from = aiosmtplib.email.extract_sender(probe) or self.sender
            if envelope_from.isascii():
                self._from_line = SMTP_POLICY.fold("From", probe["From"]).rstrip("\r\n")
                self._envelope_from = envelope_from
        # A bare ASCII addr-spec goes on the MAIL command as it is (``_send_plain``).
        self._plain_sender: bytes | None = None
        if self._from_line is not None and ADDR_SPEC.fullmatch(self._envelope_from):
            self._plain_sender = self._envelope_from.encode("ascii")
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
        html: str | None = None,
        boundary: str | None = None,
    ) -> EmailMessage:
        message = EmailMessage()
        try:
            message["From"] = self.sender
            message["To"] = to
            message["Subject"] = subject
            message["Message-ID"] = message_id
            message["Date"] = date or now_header()
            for name, value in (headers or {}).items():
                if name.lower() in VERBATIM_HEADERS:
                    if verbatim_value(name, value) is None:
                        raise ValueError(name)
                    message[name] = Verbatim(name, value)
                else:
                    message[name] = value
        except (ValueError, TypeError) as exc:
            # A newline or malformed address in a header: the same input fails every time.
            raise PermanentDeliveryError(
                f"email headers are not valid ({type(exc).__name__})"
            ) from None
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
            message.set_boundary(boundary or new_boundary())
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

    async def _deliver(self, message: EmailMessage | bytes, to: str) -> None:
        kept = self._take_idle()
        if kept is not None:
            try:
                await self._send_on(kept, message, to)
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
            await self._send_on(client, message, to)
        except BaseException:
            client.close()
            raise
        self._give_back(client)

    async def _send_on(
        self, client: aiosmtplib.SMTP, message: EmailMessage | bytes, to: str
    ) -> None:
        if isinstance(message, bytes):  # a plain message, already the DATA
            if self._plain_sender is not None:
                await self._send_plain(client, self._plain_sender, message, to)
            else:
                await client.sendmail(self._envelope_from, [to], message)
        else:
            await client.send_message(message)

    async def _send_plain(
        self, client: aiosmtplib.SMTP, sender: bytes, data: bytes, to: str
    ) -> None:
        """MAIL, RCPT and DATA for a plain message, as ``sendmail`` sends them.

        ``sendmail`` parses the sender and the recipient twice each with
        ``email.utils.parseaddr``, about 4 % of a worker's time at full load. Here both are
        bare ASCII addr-specs, checked when the message was built (``plain_message``, and
        the sender once), so they go on the command lines as they are. The rest is
        ``sendmail``'s: EHLO (HELO if refused) before the first message, ``SIZE`` when the
        server offers it (the bytes are already CRLF-terminated), and RSET after a refusal
        so the connection can carry the next message.
        """
        if client.is_ehlo_or_helo_needed:
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                if not client.is_connected:
                    raise
                await client.helo()
        mail = [b"MAIL", b"FROM:<" + sender + b">"]
        if client.supports_extension("size"):
            mail.append(b"SIZE=%d" % len(data))
        try:
            response = await client.execute_command(*mail)
            if response.code != aiosmtplib.SMTPStatus.completed:
                raise aiosmtplib.SMTPSenderRefused(
                    response.code, response.message, self._envelope_from
                )
            response = await client.execute_command(b"RCPT", b"TO:<" + to.encode("ascii") + b">")
            if response.code not in (
                aiosmtplib.SMTPStatus.completed,
                aiosmtplib.SMTPStatus.will_forward,
            ):
                refused = aiosmtplib.SMTPRecipientRefused(response.code, response.message, to)
                raise aiosmtplib.SMTPRecipientsRefused([refused])
            await client.data(data)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await client.rset()
            raise

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
        html: str | None = None,
    ) -> str:
        date = now_header()
        boundary = new_boundary() if html is not None else ""
        message: EmailMessage | bytes | None = None
        if self._from_line is not None:
            message = plain_message(
                sender_line=self._from_line,
                to=to,
                subject=subject,
                body=body,
                message_id=message_id,
                date=date,
                headers=headers,
                html=html,
                boundary=boundary,
            )
        if message is None:
            message = self.build_message(
                to=to,
                subject=subject,
                body=body,
                message_id=message_id,
                headers=headers,
                date=date,
                html=html,
                boundary=boundary or None,
            )
        try:
            # Ids only: the Message-ID names the execution and the step; the recipient
            # and the message stay out of the trace.
            with tracing.client_span(
                "smtp send",
                {
                    "careflow.message_id": _bare(message_id),
                    "server.address": self.config.hostname,
                    "server.port": self.config.port,
                },
            ):
                await self._deliver(message, to)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients] or [550]
            if 421 in codes:
                raise _rate_limited(421) from None
            raise _classify(min(codes), "recipient") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code in RATE_CODES:
                raise _rate_limited(exc.code) from None
            if isinstance(exc, aiosmtplib.SMTPConnectError):
                raise TransientDeliveryError(
                    f"SMTP connection failed ({type(exc).__name__})"
                ) from None
            raise _classify(exc.code, "server") from None
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPServerDisconnected,
        ) as exc:
            raise TransientDeliveryError(f"SMTP connection failed ({type(exc).__name__})") from None
        except aiosmtplib.SMTPException as exc:
            raise TransientDeliveryError(f"SMTP error ({type(exc).__name__})") from None
        except OSError as exc:  # refused connections and timeouts alike
            raise TransientDeliveryError(f"SMTP connection failed ({type(exc).__name__})") from None
        log.info("email_sent", message_id=message_id, provider=self.provider)
        return _bare(message_id)
