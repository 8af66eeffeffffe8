from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

import aiosmtplib.email
import pytest
from aiosmtpd.controller import Controller

from careflow.config import Settings
from careflow.delivery.email import (
    LogEmailTransport,
    SmtpConfig,
    SmtpTransport,
    message_id_for,
)
from careflow.delivery.errors import PermanentDeliveryError, TransientDeliveryError
from careflow.templates.builtin import builtin_template
from careflow.templates.rendering import SAMPLE_CONTEXT, render
from tests.conftest import make_settings
from tests.fixtures.smtp import SmtpServer, free_port

RECIPIENT = "pat@example.com"


def text_of(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode(message.get_content_charset() or "ascii")


class _RefuseRecipients:
    """An SMTP server that knows no mailbox: every RCPT gets a permanent 550."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        return "550 5.1.1 No such user"


@pytest.fixture(scope="module")
def refusing_smtp() -> Iterator[str]:
    port = free_port()
    controller = Controller(_RefuseRecipients(), hostname="127.0.0.1", port=port)
    controller.start()
    yield f"smtp://127.0.0.1:{port}"
    controller.stop()


class TestSmtpTransport:
    async def test_delivers_with_the_given_message_id(
        self, smtp: SmtpServer, settings: Settings, transport: SmtpTransport
    ) -> None:
        message_id = message_id_for(12, 1)
        provider_id = await transport.send(
            to=RECIPIENT,
            subject="Your appointment",
            body="See you soon — café at 10:00",
            message_id=message_id,
            headers={"X-Careflow-Execution": "12"},
        )

        assert message_id == "<exec-12.action-1@careflow>"
        assert provider_id == "exec-12.action-1@careflow"
        [received] = smtp.sink.messages
        assert received.message_id == message_id
        assert received.rcpt_tos == [RECIPIENT]
        assert received.mail_from == settings.email_from
        assert received.message["From"] == settings.email_from
        assert received.message["To"] == RECIPIENT
        assert received.message["Subject"] == "Your appointment"
        assert received.message["X-Careflow-Execution"] == "12"
        assert "café at 10:00" in text_of(received.message)

    async def test_sends_a_rendered_builtin(
        self, smtp: SmtpServer, transport: SmtpTransport
    ) -> None:
        source = builtin_template("appointment_reminder", "email")
        assert source is not None
        rendered = render(source, SAMPLE_CONTEXT)
        assert rendered.subject is not None

        await transport.send(
            to=RECIPIENT, subject=rendered.subject, body=rendered.body, message_id="<m1@careflow>"
        )

        [received] = smtp.sink.messages
        # RFC 5322 unfolding: a long subject arrives folded over several lines.
        assert re.sub(r"\r?\n(?=[ \t])", "", received.message["Subject"]) == rendered.subject
        assert "Main clinic" in text_of(received.message)

    async def test_a_451_is_transient_and_the_retry_goes_through(
        self, smtp: SmtpServer, transport: SmtpTransport
    ) -> None:
        smtp.sink.fail_next = 1

        with pytest.raises(TransientDeliveryError) as failed:
            await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<r@careflow>")
        assert "451" in str(failed.value)
        assert RECIPIENT not in str(failed.value)
        assert smtp.sink.messages == []

        await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<r@careflow>")
        assert smtp.sink.message_ids() == ["<r@careflow>"]

    async def test_an_unreachable_server_is_transient(self, database_url: str) -> None:
        closed = make_settings(database_url, smtp_url=f"smtp://127.0.0.1:{free_port()}")

        with pytest.raises(TransientDeliveryError) as failed:
            await SmtpTransport(closed).send(
                to=RECIPIENT, subject="s", body="b", message_id="<u@careflow>"
            )
        assert failed.value.__cause__ is None

    async def test_a_refused_recipient_is_permanent(
        self, refusing_smtp: str, database_url: str
    ) -> None:
        settings = make_settings(database_url, smtp_url=refusing_smtp)

        with pytest.raises(PermanentDeliveryError) as failed:
            await SmtpTransport(settings).send(
                to=RECIPIENT, subject="s", body="b", message_id="<p@careflow>"
            )
        assert "550" in str(failed.value)
        assert RECIPIENT not in str(failed.value)

    async def test_a_header_injection_is_refused_before_sending(
        self, smtp: SmtpServer, transport: SmtpTransport
    ) -> None:
        with pytest.raises(PermanentDeliveryError):
            await transport.send(
                to=f"{RECIPIENT}\r\nBcc: someone@example.com",
                subject="s",
                body="b",
                message_id="<h@careflow>",
            )
        assert smtp.sink.messages == []


class TestMessages:
    """Every message is an EmailMessage, flattened and sent by aiosmtplib's send_message."""

    async def test_a_message_arrives_as_email_message_writes_it(
        self, smtp: SmtpServer, settings: Settings
    ) -> None:
        transport = SmtpTransport(settings)
        message_id = message_id_for(7, 1)
        body = "Hello Ada,\n\nYour registration form is waiting.\nSee you soon.\n"
        await transport.send(to=RECIPIENT, subject="Welcome", body=body, message_id=message_id)

        [received] = smtp.sink.messages
        assert received.mail_from == settings.email_from
        assert received.rcpt_tos == [RECIPIENT]
        assert received.message_id == message_id
        assert received.message["From"] == settings.email_from
        assert received.message["To"] == RECIPIENT
        assert received.message["Subject"] == "Welcome"
        assert received.message["MIME-Version"] == "1.0"
        assert received.message.get_content_type() == "text/plain"
        assert received.message.get_content_charset() == "utf-8"
        assert received.message["Content-Transfer-Encoding"] == "7bit"
        assert text_of(received.message).replace("\r\n", "\n") == body
        date = received.message["Date"]
        assert parsedate_to_datetime(date).tzinfo is not None
        expected = aiosmtplib.email.flatten_message(
            transport.build_message(
                to=RECIPIENT, subject="Welcome", body=body, message_id=message_id, date=date
            )
        )
        assert received.raw == expected

    @pytest.mark.parametrize(
        ("body", "cte"),
        [
            ("Hello\n", "7bit"),
            (("word " * 30 + "\n") * 3, "quoted-printable"),  # lines over 78 characters
            ("=" * 100, "base64"),  # shorter in base64 than quoted-printable
            ("Bonjour José, à bientôt\n", "8bit"),  # the server offers 8BITMIME
        ],
    )
    async def test_the_body_arrives_intact_in_the_encoding_email_message_chose(
        self, smtp: SmtpServer, settings: Settings, body: str, cte: str
    ) -> None:
        await SmtpTransport(settings).send(
            to=RECIPIENT, subject="Hi", body=body, message_id="<b@careflow>"
        )
        [received] = smtp.sink.messages
        assert received.message["Content-Transfer-Encoding"] == cte
        assert text_of(received.message).replace("\r\n", "\n").rstrip("\n") == body.rstrip("\n")

    async def test_a_non_ascii_subject_is_an_encoded_word(
        self, smtp: SmtpServer, settings: Settings
    ) -> None:
        await SmtpTransport(settings).send(
            to=RECIPIENT, subject="Café", body="Bonjour", message_id="<c@careflow>"
        )
        [received] = smtp.sink.messages
        assert received.message["Subject"] == "=?utf-8?q?Caf=C3=A9?="
        assert str(make_header(decode_header(received.message["Subject"]))) == "Café"
        assert "BODY=8BITMIME" in received.mail_options  # send_message's envelope

    async def test_a_non_ascii_sender_asks_for_smtputf8(
        self, smtp: SmtpServer, database_url: str
    ) -> None:
        settings = make_settings(database_url, smtp_url=smtp.url, email_from="josé@example.com")
        await SmtpTransport(settings).send(
            to=RECIPIENT, subject="Hi", body="Hello", message_id="<u@careflow>"
        )

        [received] = smtp.sink.messages
        assert received.mail_from == "josé@example.com"
        assert "SMTPUTF8" in received.mail_options
        assert received.raw.startswith("From: josé@example.com\r\n".encode())

    async def test_a_sender_with_a_display_name(self, smtp: SmtpServer, database_url: str) -> None:
        sender = "Dr. Grey's Practice <practice@example.com>"
        transport = SmtpTransport(make_settings(database_url, smtp_url=smtp.url, email_from=sender))
        await transport.send(to=RECIPIENT, subject="Hi", body="Hello", message_id="<d@careflow>")

        [received] = smtp.sink.messages
        assert received.mail_from == "practice@example.com"  # as aiosmtplib derives it
        built = transport.build_message(
            to=RECIPIENT,
            subject="Hi",
            body="Hello",
            message_id="<d@careflow>",
            date=received.message["Date"],
        )
        assert received.raw == aiosmtplib.email.flatten_message(built)

    async def test_a_recipient_with_a_display_name(
        self, smtp: SmtpServer, settings: Settings
    ) -> None:
        await SmtpTransport(settings).send(
            to=f"José <{RECIPIENT}>", subject="Hi", body="Hello", message_id="<n@careflow>"
        )
        [received] = smtp.sink.messages
        assert received.rcpt_tos == [RECIPIENT]
        assert str(make_header(decode_header(received.message["To"]))) == f"José <{RECIPIENT}>"

    async def test_a_sender_email_message_refuses_fails_each_send(
        self, smtp: SmtpServer, database_url: str
    ) -> None:
        settings = make_settings(
            database_url, smtp_url=smtp.url, email_from="a@example.com\r\nBcc: b@example.com"
        )
        transport = SmtpTransport(settings)
        for _ in range(2):
            with pytest.raises(PermanentDeliveryError):
                await transport.send(
                    to=RECIPIENT, subject="Hi", body="Hello", message_id="<s@careflow>"
                )
        assert smtp.sink.messages == []

    @pytest.mark.parametrize(
        ("to", "subject"),
        [
            ("pat@example.com\r\nBcc: x@example.com", "Hi"),
            ("pat@example.com", "Hi\nBcc: x@example.com"),
        ],
    )
    def test_a_header_injection_is_refused_when_the_message_is_built(
        self, settings: Settings, to: str, subject: str
    ) -> None:
        with pytest.raises(PermanentDeliveryError):
            SmtpTransport(settings).build_message(
                to=to, subject=subject, body="Hello", message_id="<i@careflow>"
            )


class TestSmtpConnections:
    async def test_messages_share_one_connection(
        self, smtp: SmtpServer, transport: SmtpTransport
    ) -> None:
        for n in range(3):
            await transport.send(to=RECIPIENT, subject="s", body="b", message_id=f"<c{n}@careflow>")
        await transport.aclose()

        assert smtp.sink.message_ids() == ["<c0@careflow>", "<c1@careflow>", "<c2@careflow>"]
        assert len({m.peer for m in smtp.sink.messages}) == 1

    async def test_concurrent_messages_each_get_a_connection_and_keep_it(
        self, smtp: SmtpServer, transport: SmtpTransport
    ) -> None:
        async def send_two(n: int) -> None:
            for k in range(2):
                await transport.send(
                    to=RECIPIENT, subject="s", body="b", message_id=f"<p{n}.{k}@careflow>"
                )

        await asyncio.gather(*(send_two(n) for n in range(3)))
        await transport.aclose()

        assert len(smtp.sink.messages) == 6
        assert len({m.peer for m in smtp.sink.messages}) == 3

    async def test_a_connection_the_server_dropped_is_replaced(self, database_url: str) -> None:
        first = SmtpServer()
        first.start()
        settings = make_settings(database_url, smtp_url=first.url)
        transport = SmtpTransport(settings)
        await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<d1@careflow>")
        first.stop()  # the kept connection is gone with the server

        second = SmtpServer(port=first.port)
        second.start()
        try:
            await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<d2@careflow>")
        finally:
            await transport.aclose()
            second.stop()
        assert first.sink.message_ids() == ["<d1@careflow>"]
        assert second.sink.message_ids() == ["<d2@careflow>"]

    async def test_an_error_closes_its_connection(
        self, smtp: SmtpServer, transport: SmtpTransport
    ) -> None:
        await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<e1@careflow>")
        smtp.sink.fail_next = 1
        with pytest.raises(TransientDeliveryError):
            await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<e2@careflow>")
        await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<e2@careflow>")
        await transport.aclose()

        first, retried = smtp.sink.messages
        assert first.peer != retried.peer


class _Picky:
    """An SMTP server that refuses one sender at MAIL and, for a while, one mailbox at RCPT;
    it records every envelope it accepts, and its commands."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str, list[str], list[str], int]] = []
        self.commands: list[str] = []

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        self.commands.append("MAIL")
        if address == "blocked@careflow.local":
            return "550 5.7.1 Sender not allowed"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        self.commands.append("RCPT")
        if address == "busy@example.com":
            return "452 4.2.2 Mailbox full, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.commands.append("RSET")
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        self.accepted.append(
            (envelope.mail_from, list(envelope.rcpt_tos), list(envelope.mail_options), len(raw))
        )
        return "250 Message accepted"


@pytest.fixture
def picky() -> Iterator[tuple[_Picky, str]]:
    handler, port = _Picky(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, f"smtp://127.0.0.1:{port}"
    controller.stop()


class TestSmtpExchange:
    """MAIL, RCPT and DATA as aiosmtplib sends them, on careflow's kept connections."""

    async def test_the_envelope_and_size(
        self, picky: tuple[_Picky, str], database_url: str
    ) -> None:
        handler, url = picky
        transport = SmtpTransport(make_settings(database_url, smtp_url=url))
        await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<z1@careflow>")
        await transport.aclose()
        [(sender, recipients, options, size)] = handler.accepted
        assert (sender, recipients) == ("no-reply@careflow.local", [RECIPIENT])
        # aiosmtpd offers SIZE and 8BITMIME; send_message declares both.
        assert sorted(options) == ["BODY=8BITMIME", f"SIZE={size}"]

    async def test_a_refused_sender_is_permanent_and_the_connection_carries_on(
        self, picky: tuple[_Picky, str], database_url: str
    ) -> None:
        handler, url = picky
        settings = make_settings(database_url, smtp_url=url, email_from="blocked@careflow.local")
        blocked = SmtpTransport(settings)
        with pytest.raises(PermanentDeliveryError) as failed:
            await blocked.send(to=RECIPIENT, subject="s", body="b", message_id="<z2@careflow>")
        assert "550" in str(failed.value)
        assert handler.commands[-2:] == ["MAIL", "RSET"]
        await blocked.aclose()
        assert handler.accepted == []

    async def test_a_busy_mailbox_is_transient_and_the_next_message_goes_through(
        self, picky: tuple[_Picky, str], database_url: str
    ) -> None:
        handler, url = picky
        transport = SmtpTransport(make_settings(database_url, smtp_url=url))
        with pytest.raises(TransientDeliveryError) as failed:
            await transport.send(
                to="busy@example.com", subject="s", body="b", message_id="<z3@careflow>"
            )
        assert "452" in str(failed.value) and "busy@" not in str(failed.value)
        assert handler.commands == ["MAIL", "RCPT", "RSET"]
        await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<z4@careflow>")
        await transport.aclose()
        assert [recipients for _, recipients, _, _ in handler.accepted] == [[RECIPIENT]]


class TestSmtpConfig:
    def test_plain_url_with_credentials(self) -> None:
        cfg = SmtpConfig.from_url("smtp://user%40corp:p%3Ass@mail.example.com:2525")
        assert cfg == SmtpConfig(
            hostname="mail.example.com",
            port=2525,
            username="user@corp",
            password="p:ss",
            use_tls=False,
            start_tls=False,
        )

    def test_smtps_is_implicit_tls_on_465(self) -> None:
        cfg = SmtpConfig.from_url("smtps://mail.example.com")
        assert (cfg.use_tls, cfg.start_tls, cfg.port) == (True, False, 465)

    def test_starttls_flag(self) -> None:
        cfg = SmtpConfig.from_url("smtp://mail.example.com?starttls=1")
        assert (cfg.use_tls, cfg.start_tls, cfg.port) == (False, True, 587)

    @pytest.mark.parametrize(
        "url", ["http://mail.example.com", "smtp://", "smtps://mail.example.com?starttls=1"]
    )
    def test_bad_urls_are_refused(self, url: str) -> None:
        with pytest.raises(ValueError):
            SmtpConfig.from_url(url)


class TestLogEmailTransport:
    async def test_returns_a_log_id_and_sends_nothing(self, smtp: SmtpServer) -> None:
        provider_id = await LogEmailTransport().send(
            to=RECIPIENT, subject="s", body="b", message_id=message_id_for(3, 0)
        )
        assert provider_id == "log-exec-3.action-0@careflow"
        assert smtp.sink.messages == []
