"""Emails as mailbox providers see them, end to end (rule → worker → aiosmtpd): the headers
that identify an automatic message and its sender, both MIME parts, and the one-click
unsubscribe that stops the next email."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.audit.models import AuditEntry
from careflow.config import Settings
from careflow.executions.models import ExecutionAction
from careflow.installation.models import Installation
from careflow.patients.models import PatientOptOut
from tests.conftest import make_settings
from tests.fixtures.smtp import ReceivedMail, SmtpServer

Auth = Callable[..., dict[str, str]]
Drain = Callable[..., Any]

PUBLIC_URL = "https://careflow.practice.example.org"
REPLY_TO = "care-team@practice.example.org"
# A name a patient typed into the host platform: markup and quotes that must stay text.
NAME = '<b>Ann</b> & "Co"'
PATIENT = {"id": 100, "first_name": NAME, "email": "ann@example.com"}
RULE = {
    "name": "Welcome",
    "trigger_event": "patient.onboarded",
    "actions": [{"type": "send_email", "template": "welcome_patient"}],
}
ONE_CLICK = {
    "content": b"List-Unsubscribe=One-Click",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}


@pytest.fixture
def settings(database_url: str, smtp: SmtpServer) -> Settings:
    return make_settings(
        database_url,
        smtp_url=smtp.url,
        email_from="no-reply@practice.example.org",
        email_reply_to=REPLY_TO,
        public_url=PUBLIC_URL + "/",
    )


async def onboard(client: httpx.AsyncClient, auth: Auth, event_id: str) -> None:
    r = await client.post(
        "/v1/events",
        json={"event_id": event_id, "type": "patient.onboarded", "data": {"patient": PATIENT}},
        headers=auth("service"),
    )
    assert r.status_code in (200, 201, 202), r.text


async def welcome_sent(client: httpx.AsyncClient, auth: Auth, drain: Drain) -> None:
    r = await client.post("/v1/automations/rules", json=RULE, headers=auth())
    assert r.status_code == 201, r.text
    await onboard(client, auth, "evt-1")
    await drain()


def unsubscribe_path(received: ReceivedMail) -> str:
    header = received.message["List-Unsubscribe"]
    match = re.fullmatch(r"<([^<>]+)>", header)
    assert match is not None, header
    url = urlsplit(match.group(1))
    assert f"{url.scheme}://{url.netloc}" == PUBLIC_URL
    return url.path


class TestHeaders:
    async def test_an_email_carries_the_headers_of_a_trusted_automatic_message(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        smtp: SmtpServer,
        maker: async_sessionmaker[AsyncSession],
    ) -> None:
        await welcome_sent(client, auth, drain)

        [received] = smtp.sink.messages
        async with maker() as session:
            installation = await session.scalar(select(Installation.installation_id))
        assert installation is not None and re.fullmatch(r"[0-9a-f]{16}", installation)
        # The domain is the sender's; the unique part names the action and this deployment.
        assert received.message_id is not None
        assert re.fullmatch(
            rf"<exec-\d+\.action-0\.{installation}@practice\.example\.org>",
            received.message_id,
        )
        headers = received.parsed()
        assert headers["Reply-To"] == REPLY_TO
        assert headers["Auto-Submitted"] == "auto-generated"
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert unsubscribe_path(received).startswith("/v1/unsubscribe/")
        # One line, as RFC 2369 readers expect it: never encoded words.
        assert b"List-Unsubscribe: <https://" in received.raw
        assert b"=?" not in received.raw.split(b"\r\n\r\n", 1)[0]

    async def test_both_parts_and_the_patients_name_escaped_in_html(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain, smtp: SmtpServer
    ) -> None:
        await welcome_sent(client, auth, drain)

        [received] = smtp.sink.messages
        parsed = received.parsed()
        assert parsed.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
        assert parsed.defects == [] and all(p.defects == [] for p in parsed.iter_parts())
        assert f"Hello {NAME}," in received.text
        html = received.html
        assert html is not None
        assert "Hello &lt;b&gt;Ann&lt;/b&gt; &amp; &#34;Co&#34;," in html
        assert "<b>Ann</b>" not in html
        # The built-in text no longer asks for replies.
        assert "reply" not in received.text.lower()


class TestOneClickUnsubscribe:
    async def test_post_opts_the_patient_out_and_the_next_email_is_skipped(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        smtp: SmtpServer,
        maker: async_sessionmaker[AsyncSession],
    ) -> None:
        await welcome_sent(client, auth, drain)
        path = unsubscribe_path(smtp.sink.messages[0])

        r = await client.post(path, **ONE_CLICK)  # no bearer token: the link is the credential
        assert r.status_code == 200, r.text
        assert "unsubscribed" in r.text
        again = await client.post(path, **ONE_CLICK)  # a second press changes nothing
        assert again.status_code == 200

        async with maker() as session:
            [opt_out] = (await session.execute(select(PatientOptOut))).scalars().all()
            assert (opt_out.organization_id, opt_out.patient_id, opt_out.channel) == (
                1,
                100,
                "email",
            )
            assert opt_out.source == "unsubscribe_link"
            [entry] = (
                (
                    await session.execute(
                        select(AuditEntry).where(AuditEntry.object_type == "patient_preferences")
                    )
                )
                .scalars()
                .all()
            )
            assert (entry.object_id, entry.actor_sub) == ("100", "careflow")
            assert entry.after == {
                "channel": "email",
                "opted_out": True,
                "source": "unsubscribe_link",
            }
            assert "ann@" not in str(entry.before) + str(entry.after)

        # The host's next snapshot still says nothing about opting out: careflow's own
        # opt-out holds, and the welcome of the next onboarding is skipped with its reason.
        await onboard(client, auth, "evt-2")
        await drain()
        assert len(smtp.sink.messages) == 1
        async with maker() as session:
            results = (
                await session.scalars(
                    select(ExecutionAction.result).where(ExecutionAction.status == "skipped")
                )
            ).all()
        assert [r.get("reason") for r in results] == ["patient unsubscribed from email"], results

    async def test_get_shows_a_page_whose_button_posts_the_one_click_body(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        smtp: SmtpServer,
        maker: async_sessionmaker[AsyncSession],
    ) -> None:
        await welcome_sent(client, auth, drain)
        path = unsubscribe_path(smtp.sink.messages[0])

        r = await client.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert '<form method="post">' in r.text
        assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in r.text
        assert "ann@" not in r.text and "Ann" not in r.text
        async with maker() as session:  # opening the link opts no one out
            assert (await session.execute(select(PatientOptOut))).first() is None

    async def test_a_forged_or_altered_token_is_404_and_changes_nothing(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        smtp: SmtpServer,
        maker: async_sessionmaker[AsyncSession],
    ) -> None:
        await welcome_sent(client, auth, drain)
        path = unsubscribe_path(smtp.sink.messages[0])
        token = path.rsplit("/", 1)[1]
        payload, signature = token.split(".")
        # The first character: the last one's low bits are padding, so changing it may
        # decode to the same signature.
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        # Another patient's id with the old signature; a made-up token; a flipped signature.
        other = payload.replace(payload[-2:], "xx")
        for bad in (f"{other}.{signature}", "WzEsMTAwLCJlbWFpbCJd.forged", f"{payload}.{flipped}"):
            for method in ("GET", "POST"):
                r = await client.request(method, f"/v1/unsubscribe/{bad}", **ONE_CLICK)
                assert r.status_code == 404, (bad, r.text)
        async with maker() as session:
            assert (await session.execute(select(PatientOptOut))).first() is None

    async def test_a_post_without_the_one_click_body_is_refused(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain, smtp: SmtpServer
    ) -> None:
        await welcome_sent(client, auth, drain)
        path = unsubscribe_path(smtp.sink.messages[0])

        r = await client.post(path, content=b"unsubscribe=yes")
        assert r.status_code == 400
        multipart = await client.post(path, files={"List-Unsubscribe": (None, "One-Click")})
        assert multipart.status_code == 200, multipart.text
