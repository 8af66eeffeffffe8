from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import re
from collections.abc import Iterator
from email.message import Message
from typing import Any

import aiosmtplib.email
import pytest
from aiosmtpd.controller import Controller
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from careflow.config import Settings
from careflow.delivery.email import LogEmailTransport, SmtpConfig, SmtpTransport, message_id_for
from careflow.delivery.email_message import new_boundary, plain_message
from careflow.delivery.errors import (
    PermanentDeliveryError,
    RateLimitedDeliveryError,
    TransientDeliveryError,
)
from careflow.templates.builtin import builtin_template
from careflow.templates.rendering import SAMPLE_CONTEXT, render
from tests.conftest import make_settings
from tests.fixtures.smtp import SmtpServer, free_port

RECIPIENT = "pat@example.com"
INSTALLATION = "0123456789abcdef"
DOMAIN = "careflow.local"
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
PINNED = {"message_id": "<exec-1.action-1@careflow>", "sender": "no-reply@careflow.local"}


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
        message_id = message_id_for(INSTALLATION, 12, 1, DOMAIN)
        provider_id = await transport.send(
            to=RECIPIENT,
            subject="Your appointment",
            body="See you soon — café at 10:00",
            message_id=message_id,
            headers={"X-Careflow-Execution": "12"},
        )

        assert message_id == "<exec-12.action-1.0123456789abcdef@careflow.local>"
        assert provider_id == "exec-12.action-1.0123456789abcdef@careflow.local"
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

    async def test_a_450_is_transient_and_the_retry_goes_through(
        self, smtp: SmtpServer, transport: SmtpTransport
    ) -> None:
        smtp.sink.fail_next = 1

        with pytest.raises(TransientDeliveryError) as failed:
            await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<r@careflow>")
        assert "450" in str(failed.value)
        assert not isinstance(failed.value, RateLimitedDeliveryError)
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


class TestPlainMessages:
    """Plain messages go out as bytes built directly; they must be EmailMessage's bytes."""

    async def test_a_plain_message_arrives_as_email_message_would_write_it(
        self, smtp: SmtpServer, settings: Settings
    ) -> None:
        transport = SmtpTransport(settings)
        message_id = message_id_for(INSTALLATION, 7, 1, DOMAIN)
        body = "Hello Ada,\n\nYour registration form is waiting.\nSee you soon.\n"
        await transport.send(to=RECIPIENT, subject="Welcome", body=body, message_id=message_id)

        [received] = smtp.sink.messages
        assert received.mail_from == settings.email_from
        assert received.rcpt_tos == [RECIPIENT]
        assert received.message_id == message_id
        assert received.message["Subject"] == "Welcome"
        assert text_of(received.message).replace("\r\n", "\n") == body
        date = received.message["Date"]
        expected = aiosmtplib.email.flatten_message(
            transport.build_message(
                to=RECIPIENT, subject="Welcome", body=body, message_id=message_id, date=date
            )
        )
        assert received.raw == expected
        # It went the plain way: these inputs are plain, and MAIL FROM did not ask for
        # 8BITMIME, which send_message does whenever the server offers it.
        assert transport._from_line is not None
        plain = plain_message(
            sender_line=transport._from_line,
            to=RECIPIENT,
            subject="Welcome",
            body=body,
            message_id=message_id,
            date=date,
        )
        assert plain == received.raw
        assert "BODY=8BITMIME" not in received.mail_options

    async def test_a_message_that_is_not_plain_goes_through_email_message(
        self, smtp: SmtpServer, settings: Settings
    ) -> None:
        await SmtpTransport(settings).send(
            to=RECIPIENT, subject="Café", body="Bonjour", message_id="<c@careflow>"
        )
        [received] = smtp.sink.messages
        assert received.message["Subject"] == "=?utf-8?q?Caf=C3=A9?="
        assert "BODY=8BITMIME" in received.mail_options  # send_message's envelope

    async def test_a_non_ascii_sender_is_left_to_email_message(
        self, smtp: SmtpServer, database_url: str
    ) -> None:
        # Its address needs SMTPUTF8, which send_message asks the server for; built as a
        # plain message it would have crashed in sendmail.
        settings = make_settings(database_url, smtp_url=smtp.url, email_from="josé@example.com")
        transport = SmtpTransport(settings)
        assert transport._from_line is None
        await transport.send(to=RECIPIENT, subject="Hi", body="Hello", message_id="<u@careflow>")

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

    async def test_a_sender_email_message_refuses_still_fails_each_send(
        self, smtp: SmtpServer, database_url: str
    ) -> None:
        settings = make_settings(
            database_url, smtp_url=smtp.url, email_from="a@example.com\r\nBcc: b@example.com"
        )
        with pytest.raises(PermanentDeliveryError):
            await SmtpTransport(settings).send(
                to=RECIPIENT, subject="Hi", body="Hello", message_id="<s@careflow>"
            )
        assert smtp.sink.messages == []

    @pytest.mark.parametrize(
        ("to", "subject", "body"),
        [
            ("José <pat@example.com>", "Hi", "Hello"),  # a display name
            ("pat@example.com", "Café", "Hello"),  # a non-ASCII subject
            ("pat@example.com", "Hi", "Bonjour José"),  # a non-ASCII body
            ("pat@example.com", "Hi", "=" * 100),  # a body EmailMessage writes in base64
            ("pat@example.com", "S" * 80, "Hello"),  # a header EmailMessage folds
            ("pat@example.com", "x =?utf-8?b?Y2Fmw6k=?= y", "Hello"),  # an encoded word
            ("pat@example.com", "", "Hello"),  # written "Subject:", with no space
            ("pat@example.com\r\nBcc: x@example.com", "Hi", "Hello"),  # an injection
            ("pat@example.com", "Hi\nBcc: x@example.com", "Hello"),
        ],
    )
    def test_what_is_not_plain_is_left_to_email_message(
        self, to: str, subject: str, body: str
    ) -> None:
        assert (
            plain_message(
                sender_line="From: a@example.com",
                to=to,
                subject=subject,
                body=body,
                message_id="<m@careflow>",
                date="Wed, 02 Dec 2026 03:30:00 +0000",
            )
            is None
        )

    @hypothesis_settings(max_examples=300, deadline=None)
    @example(to=RECIPIENT, subject="x =?utf-8?q?caf=C3=A9?= y", body="Hi", **PINNED)
    @example(to=RECIPIENT, subject="  two  spaces ", body=" \n.\nFrom me\n", **PINNED)
    @example(to=RECIPIENT, subject="Long", body=("word " * 30 + "\n") * 12, **PINNED)
    @example(to=RECIPIENT, subject="Long", body="a=b " * 40 + "  \n\n", **PINNED)
    @example(to=RECIPIENT, subject="Hi", body="Hi", message_id="<=@?=[>>", sender=RECIPIENT)
    @example(  # a display name the stdlib cannot fold: SmtpTransport must still be built
        to=RECIPIENT, subject="Hi", body="Hi", message_id="<m@careflow>", sender=".9*#Z <a@b.cd>"
    )
    @given(
        to=st.one_of(
            st.emails(),
            st.text(st.characters(codec="ascii"), max_size=40),
        ),
        subject=st.one_of(st.text(max_size=90), st.text(PRINTABLE, max_size=90)),
        body=st.one_of(st.text(max_size=300), st.text(st.characters(codec="ascii"), max_size=300)),
        message_id=st.one_of(
            st.builds(
                message_id_for,
                st.text("0123456789abcdef", min_size=16, max_size=16),
                st.integers(1, 2**62),
                st.integers(0, 50),
                st.sampled_from([DOMAIN, "mail.practice.example.org"]),
            ),
            st.builds("<{}>".format, st.text(PRINTABLE, max_size=20)),
        ),
        sender=st.one_of(
            st.just("no-reply@careflow.local"),
            st.emails(),
            st.builds("{} <{}>".format, st.text(PRINTABLE, max_size=20), st.emails()),
            st.builds("{} <{}>".format, st.text(max_size=10), st.emails()),
        ),
    )
    def test_plain_bytes_are_email_message_bytes(
        self, to: str, subject: str, body: str, message_id: str, sender: str
    ) -> None:
        settings = make_settings("sqlite+aiosqlite://", smtp_url="smtp://h:25", email_from=sender)
        transport = SmtpTransport(settings)
        date = "Wed, 02 Dec 2026 03:30:00 +0000"
        if transport._from_line is None:  # a sender EmailMessage refuses, or not ASCII
            return
        raw = plain_message(
            sender_line=transport._from_line,
            to=to,
            subject=subject,
            body=body,
            message_id=message_id,
            date=date,
        )
        if raw is None:
            return
        built = transport.build_message(
            to=to, subject=subject, body=body, message_id=message_id, date=date
        )
        for cte_type in ("8bit", "7bit"):  # with and without the server's 8BITMIME
            assert raw == aiosmtplib.email.flatten_message(built, cte_type=cte_type)


UNSUBSCRIBE = (
    "<https://careflow.practice.example.org/v1/unsubscribe/"
    "WzEsMTAwLCJlbWFpbCJd.Qh3c0tY6m3n8Xl7dJk2pV9sR1aBcDeFgHiJ>"
)
TRUSTED_HEADERS = {
    "Auto-Submitted": "auto-generated",
    "Reply-To": "care@practice.example.org",
    "List-Unsubscribe": UNSUBSCRIBE,
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}
URL_CHARS = st.characters(codec="ascii", categories=["L", "N"], include_characters="-._~")


def well_formed(raw: bytes) -> email.message.EmailMessage:
    """The DATA as the standard library's strict parser reads it, with no defect found."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    assert parsed.defects == []
    for part in parsed.walk():
        assert part.defects == []
    return parsed


class TestMultipartMessages:
    """Text with an HTML alternative and the headers of an automatic message, on both paths."""

    async def test_a_plain_multipart_message_arrives_as_email_message_would_write_it(
        self, smtp: SmtpServer, settings: Settings
    ) -> None:
        transport = SmtpTransport(settings)
        message_id = message_id_for(INSTALLATION, 9, 0, DOMAIN)
        body = "Hello Ada,\n\nYour form is waiting.\n"
        html = "<p>Hello Ada,</p>\n<p>Your form is <b>waiting</b>.</p>\n"
        await transport.send(
            to=RECIPIENT,
            subject="Welcome",
            body=body,
            message_id=message_id,
            headers=TRUSTED_HEADERS,
            html=html,
        )
        await transport.aclose()

        [received] = smtp.sink.messages
        assert "BODY=8BITMIME" not in received.mail_options  # it went the plain way
        parsed = well_formed(received.raw)
        assert parsed.get_content_type() == "multipart/alternative"
        text_part, html_part = parsed.iter_parts()
        assert text_part.get_content().replace("\r\n", "\n") == body
        assert html_part.get_content_type() == "text/html"
        assert html_part.get_content().replace("\r\n", "\n") == html
        for name, value in TRUSTED_HEADERS.items():
            assert parsed[name] == value
        boundary = parsed.get_boundary()
        assert boundary is not None
        expected = aiosmtplib.email.flatten_message(
            transport.build_message(
                to=RECIPIENT,
                subject="Welcome",
                body=body,
                message_id=message_id,
                headers=TRUSTED_HEADERS,
                date=received.message["Date"],
                html=html,
                boundary=boundary,
            )
        )
        assert received.raw == expected

    async def test_a_long_unsubscribe_link_stays_one_line_through_email_message(
        self, smtp: SmtpServer, transport: SmtpTransport
    ) -> None:
        # A non-ASCII subject sends the message through EmailMessage, which would otherwise
        # write a long List-Unsubscribe as encoded words that no mail client reads as a URL.
        await transport.send(
            to=RECIPIENT,
            subject="Café",
            body="Bonjour",
            message_id="<long@careflow.local>",
            headers=TRUSTED_HEADERS,
            html="<p>Bonjour</p>",
        )
        [received] = smtp.sink.messages
        assert f"\r\nList-Unsubscribe: {UNSUBSCRIBE}\r\n".encode() in received.raw
        parsed = well_formed(received.raw)
        assert parsed["List-Unsubscribe"] == UNSUBSCRIBE
        assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]

    async def test_a_header_that_cannot_be_one_line_is_refused(
        self, smtp: SmtpServer, transport: SmtpTransport
    ) -> None:
        for value in ("<https://x/a>\r\nBcc: x@example.com", "<https://x/" + "a" * 1000 + ">"):
            with pytest.raises(PermanentDeliveryError):
                await transport.send(
                    to=RECIPIENT,
                    subject="Hi",
                    body="b",
                    message_id="<v@careflow.local>",
                    headers={"List-Unsubscribe": value},
                    html="<p>b</p>",
                )
        assert smtp.sink.messages == []

    @hypothesis_settings(max_examples=300, deadline=None)
    @example(body="Hi", html="<p>Hi</p>", headers=TRUSTED_HEADERS, subject="Hi")
    @example(body="a=b " * 40, html="<p>" + "x" * 200 + "</p>", headers={}, subject="Long")
    @example(body="Hi", html="caf\u00e9", headers=TRUSTED_HEADERS, subject="Hi")
    @example(body="Hi", html="x", headers={"Reply-To": "Care <c@example.org>"}, subject="Hi")
    @given(
        body=st.one_of(st.text(max_size=300), st.text(st.characters(codec="ascii"), max_size=300)),
        html=st.one_of(st.text(max_size=300), st.text(st.characters(codec="ascii"), max_size=300)),
        headers=st.dictionaries(
            st.sampled_from(
                ["Reply-To", "Auto-Submitted", "List-Unsubscribe", "List-Unsubscribe-Post", "X-A"]
            ),
            st.one_of(
                st.emails(),
                st.text(PRINTABLE, max_size=120),
                st.builds(
                    "<https://careflow.example.org/v1/unsubscribe/{}>".format,
                    st.text(URL_CHARS, max_size=200),
                ),
            ),
            max_size=5,
        ),
        subject=st.text(PRINTABLE, max_size=60),
    )
    def test_plain_multipart_bytes_are_email_message_bytes(
        self, body: str, html: str, headers: dict[str, str], subject: str
    ) -> None:
        settings = make_settings("sqlite+aiosqlite://", smtp_url="smtp://h:25")
        transport = SmtpTransport(settings)
        assert transport._from_line is not None
        date = "Wed, 02 Dec 2026 03:30:00 +0000"
        message_id = message_id_for(INSTALLATION, 5, 2, DOMAIN)
        boundary = new_boundary()
        raw = plain_message(
            sender_line=transport._from_line,
            to=RECIPIENT,
            subject=subject,
            body=body,
            message_id=message_id,
            date=date,
            headers=headers,
            html=html,
            boundary=boundary,
        )
        if raw is None:
            return
        built = transport.build_message(
            to=RECIPIENT,
            subject=subject,
            body=body,
            message_id=message_id,
            date=date,
            headers=headers,
            html=html,
            boundary=boundary,
        )
        for cte_type in ("8bit", "7bit"):
            assert raw == aiosmtplib.email.flatten_message(built, cte_type=cte_type)
        parsed = well_formed(raw)
        parts = [part.get_content_type() for part in parsed.iter_parts()]
        assert parts == ["text/plain", "text/html"]


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


class TestPlainExchange:
    """A plain message's MAIL, RCPT and DATA, sent without aiosmtplib's address parsing."""

    async def test_the_envelope_and_size_as_sendmail_sends_them(
        self, picky: tuple[_Picky, str], database_url: str
    ) -> None:
        handler, url = picky
        transport = SmtpTransport(make_settings(database_url, smtp_url=url))
        await transport.send(to=RECIPIENT, subject="s", body="b", message_id="<z1@careflow>")
        await transport.aclose()
        [(sender, recipients, options, size)] = handler.accepted
        assert (sender, recipients) == ("no-reply@careflow.local", [RECIPIENT])
        # aiosmtpd offers SIZE: the DATA's length in octets, as sendmail computes it.
        assert options == [f"SIZE={size}"]

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
            to=RECIPIENT,
            subject="s",
            body="b",
            message_id=message_id_for(INSTALLATION, 3, 0, DOMAIN),
        )
        assert provider_id == "log-exec-3.action-0.0123456789abcdef@careflow.local"
        assert smtp.sink.messages == []
