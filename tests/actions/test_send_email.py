from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.actions.base import ActionOutcome, RetryableActionError
from careflow.actions.registry import EXECUTORS
from careflow.installation import service as installation
from careflow.installation.models import Installation
from careflow.kit.clock import FrozenClock
from careflow.messages.models import Message
from careflow.patients import service as patients
from tests.actions.conftest import ContextFor
from tests.conftest import make_settings
from tests.fixtures.factories import create_execution, create_template
from tests.fixtures.smtp import SmtpServer

CONFIG = {"type": "send_email", "template": "welcome_patient"}
PATIENT = {"id": 100, "first_name": "Alex", "email": "alex@example.com"}
executor = EXECUTORS["send_email"]

SendEmail = Callable[..., Awaitable[ActionOutcome]]


async def messages(session: AsyncSession) -> list[Message]:
    return list((await session.execute(select(Message))).scalars())


@pytest.fixture
def send_email(context_for: ContextFor) -> SendEmail:
    """``await send_email(session, execution, **overrides)``: the executor run once on
    ``CONFIG`` for ``PATIENT``; ``overrides`` replace any part of the context."""

    async def send(session: AsyncSession, execution: Any, **overrides: Any) -> ActionOutcome:
        return await executor.execute(
            context_for(session, execution, **{"config": CONFIG, "patient": PATIENT, **overrides})
        )

    return send


class TestSendEmail:
    async def test_sends_once_with_a_deterministic_message_id(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            await session.commit()
            outcome = await send_email(session, execution, action_index=2)
            await session.commit()

        assert outcome.status == "success"
        email_id = outcome.result["email_id"]
        assert email_id.startswith("msg_")
        async with maker() as session:
            installation = await session.scalar(select(Installation.installation_id))
        assert installation is not None and len(installation) == 16
        message_id = f"<exec-{execution.id}.action-2.{installation}@careflow.local>"
        assert smtp.sink.message_ids() == [message_id]
        received = smtp.sink.messages[0]
        assert received.rcpt_tos == ["alex@example.com"]
        assert received.message["Subject"] == "Welcome, Alex"

        async with maker() as session:
            [row] = await messages(session)
            assert row.id == email_id
            assert (row.channel, row.recipient, row.template) == (
                "email",
                "alex@example.com",
                "welcome_patient",
            )
            assert (row.status, row.provider, row.attempts) == ("sent", "smtp", 1)
            assert (row.execution_id, row.action_index, row.patient_id) == (execution.id, 2, 100)
            assert row.provider_message_id == message_id.strip("<>")
            assert row.subject == "Welcome, Alex"
            assert "Hello Alex" in row.body
            assert row.sent_at == clock.now()

            # The job runs again (a crash after the commit): nothing is sent twice.
            again = await send_email(session, execution, action_index=2)
            assert again.status == "success"
            assert again.result == {"email_id": email_id}
        assert len(smtp.sink.messages) == 1

    @pytest.mark.parametrize(
        ("patient", "reason"),
        [
            (None, "no email address"),
            ({"id": 100}, "no email address"),
            ({"id": 100, "email": "  "}, "no email address"),
            (
                {"id": 100, "email": "alex@example.com", "email_opt_out": True},
                "patient opted out of email",
            ),
        ],
    )
    async def test_skips_without_a_reachable_address(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
        patient: dict[str, Any] | None,
        reason: str,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            outcome = await send_email(session, execution, patient=patient)
            assert (outcome.status, outcome.reason) == ("skipped", reason)
            assert await messages(session) == []
        assert smtp.sink.messages == []

    async def test_temporary_smtp_failure_is_retried(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        smtp.sink.fail_next = 1
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            await session.commit()
            with pytest.raises(RetryableActionError, match="450"):
                await send_email(session, execution)
            await session.rollback()  # what the job runner does when the error propagates
            await session.refresh(execution)
            assert await messages(session) == []

            outcome = await send_email(session, execution, attempt=2)
            assert outcome.status == "success"
            [row] = await messages(session)
            assert (row.status, row.attempts, row.error) == ("sent", 2, None)
        assert len(smtp.sink.messages) == 1

    async def test_temporary_failure_on_the_last_attempt_is_a_failure(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        smtp.sink.fail_next = 1
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            outcome = await send_email(session, execution, attempt=5, is_last_attempt=True)
            await session.commit()
        assert outcome.status == "failure"
        assert outcome.error is not None and "450" in outcome.error
        assert "alex@example.com" not in outcome.error
        async with maker() as session:
            [row] = await messages(session)
            assert (row.status, row.attempts, row.error) == ("failed", 5, outcome.error)
            assert outcome.result == {"email_id": row.id}
        assert smtp.sink.messages == []

    async def test_a_failed_message_is_sent_again_by_a_later_run(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        smtp.sink.fail_next = 1
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            failed = await send_email(session, execution, is_last_attempt=True)
            await session.commit()
            # An execution retry runs the failed action again: the same row is reused.
            retried = await send_email(session, execution)
            await session.commit()
            assert failed.status == "failure"
            assert retried.status == "success"
            assert retried.result == failed.result
            [row] = await messages(session)
            assert (row.status, row.attempts, row.error) == ("sent", 2, None)
        assert len(smtp.sink.messages) == 1

    async def test_render_error_records_a_failed_message(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        async with maker() as session:
            await create_template(
                session, now=clock.now(), subject="Hi", body="{{ patient.age / 0 }}"
            )
            execution = await create_execution(session, now=clock.now())
            outcome = await send_email(session, execution, patient={**PATIENT, "age": 30})
            assert outcome.status == "failure"
            assert outcome.error is not None and "failed to render" in outcome.error
            [row] = await messages(session)
            assert (row.status, row.body, row.template) == ("failed", "", "welcome_patient")
        assert smtp.sink.messages == []

    async def test_organisation_override_is_used(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        async with maker() as session:
            await create_template(
                session,
                now=clock.now(),
                subject="Our own welcome",
                body="Dear {{ patient.first_name }}",
            )
            execution = await create_execution(session, now=clock.now())
            outcome = await send_email(session, execution)
            assert outcome.status == "success"
        [received] = smtp.sink.messages
        assert received.message["Subject"] == "Our own welcome"
        assert received.text.strip() == "Dear Alex"
        # Given no HTML, the organisation's text is the HTML part too, escaped.
        assert received.html is not None and "<p>Dear Alex</p>" in received.html

    async def test_unknown_template_is_a_failure(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            outcome = await send_email(
                session, execution, config={"type": "send_email", "template": "no_such_template"}
            )
            assert outcome.status == "failure"
            assert outcome.error == "unknown email template 'no_such_template'"
        assert smtp.sink.messages == []

    async def test_without_smtp_the_message_log_is_the_record(
        self,
        maker: async_sessionmaker[AsyncSession],
        database_url: str,
        clock: FrozenClock,
        send_email: SendEmail,
    ) -> None:
        settings = make_settings(database_url)
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            outcome = await send_email(session, execution, settings=settings)
            assert outcome.status == "success"
            [row] = await messages(session)
            assert (row.provider, row.status) == ("log", "sent")
            assert await session.scalar(select(func.count()).select_from(Message)) == 1


class TestSendEmailPreview:
    async def test_preview_names_the_recipient(
        self, maker: async_sessionmaker[AsyncSession]
    ) -> None:
        async with maker() as session:
            preview = await executor.preview(session, 1, CONFIG, {"patient": PATIENT})
        assert preview == {"template": "welcome_patient", "would_send_to": "alex@example.com"}

    async def test_preview_of_an_opted_out_patient(
        self, maker: async_sessionmaker[AsyncSession]
    ) -> None:
        patient = {**PATIENT, "email_opt_out": True}
        async with maker() as session:
            preview = await executor.preview(session, 1, CONFIG, {"patient": patient})
        assert preview == {
            "template": "welcome_patient",
            "would_send_to": None,
            "skip_reason": "patient opted out of email",
        }


class TestTrustedHeaders:
    """What the executor adds to every email: checked at the SMTP server it reaches."""

    async def test_the_message_id_is_the_same_when_a_rolled_back_send_is_retried(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        async with maker() as session:
            await installation.identity(session, clock.now())  # as the migration leaves it
            execution = await create_execution(session, now=clock.now())
            await session.commit()
            first = await send_email(session, execution, action_index=1)
            await session.rollback()  # a crash after the SMTP server's 250, before the commit
            await session.refresh(execution)
            second = await send_email(session, execution, action_index=1, attempt=2)
            await session.commit()
        assert (first.status, second.status) == ("success", "success")
        sent, resent = smtp.sink.message_ids()
        assert sent == resent and sent is not None and sent.startswith(f"<exec-{execution.id}.")

    async def test_without_a_public_url_or_reply_to_those_headers_are_left_out(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            assert (await send_email(session, execution)).status == "success"
        [received] = smtp.sink.messages
        parsed = received.parsed()
        assert parsed["Auto-Submitted"] == "auto-generated"
        for absent in ("Reply-To", "List-Unsubscribe", "List-Unsubscribe-Post"):
            assert parsed[absent] is None
        assert received.message_id is not None
        assert received.message_id.endswith("@careflow.local>")  # the sender's domain

    async def test_the_message_id_domain_setting_wins_over_the_senders(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
        database_url: str,
    ) -> None:
        settings = make_settings(
            database_url, smtp_url=smtp.url, message_id_domain="mail.practice.example.org"
        )
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            assert (await send_email(session, execution, settings=settings)).status == "success"
        [received] = smtp.sink.messages
        assert received.message_id is not None
        assert received.message_id.endswith("@mail.practice.example.org>")

    async def test_a_patient_careflow_recorded_as_unsubscribed_gets_nothing(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        async with maker() as session:
            await patients.record_opt_out(
                session, 1, 100, channel="email", source="unsubscribe_link", now=clock.now()
            )
            execution = await create_execution(session, now=clock.now())
            outcome = await send_email(session, execution)
            assert (outcome.status, outcome.reason) == (
                "skipped",
                "patient unsubscribed from email",
            )
            preview = await executor.preview(session, 1, CONFIG, {"patient": PATIENT})
            assert preview["skip_reason"] == "patient unsubscribed from email"
            # Another organisation's patient 100 is someone else.
            other = await create_execution(session, org=2, now=clock.now())
            assert (await send_email(session, other)).status == "success"
        assert [m.rcpt_tos for m in smtp.sink.messages] == [["alex@example.com"]]

    async def test_an_organisation_html_template_is_sent_escaped_with_a_text_made_from_it(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        send_email: SendEmail,
        smtp: SmtpServer,
    ) -> None:
        async with maker() as session:
            await create_template(
                session,
                now=clock.now(),
                subject="Hi",
                body="",
                html_body=(
                    "<p>Dear {{ patient.first_name }},</p>"
                    '<p><a href="https://portal.example.com/book">Book online</a></p>'
                ),
            )
            execution = await create_execution(session, now=clock.now())
            patient = {**PATIENT, "first_name": "<script>x</script>"}
            assert (await send_email(session, execution, patient=patient)).status == "success"
        [received] = smtp.sink.messages
        assert received.html is not None
        assert "<p>Dear &lt;script&gt;x&lt;/script&gt;,</p>" in received.html
        assert received.text.splitlines() == [
            "Dear <script>x</script>,",
            "",
            "Book online (https://portal.example.com/book)",
        ]
