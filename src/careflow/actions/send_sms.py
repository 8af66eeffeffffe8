"""``send_sms``: render a template and text it to the patient, outside their quiet hours."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import ActionContext, ActionOutcome
from careflow.actions.common import contact_of, opted_out, patient_of, required_str, skipped
from careflow.actions.messaging import (
    MessageStatus,
    contact_preview,
    existing_message,
    is_sent,
    render_and_send,
)
from careflow.actions.quiet_hours import next_allowed_time
from careflow.delivery.transports import get_transports
from careflow.jobs.errors import DeferJob
from careflow.messages.models import Message
from careflow.organizations.service import effective_settings
from careflow.templates.rendering import Rendered

NO_PHONE = "no phone number"
OPTED_OUT = "patient opted out of SMS"
HOURLY_LIMIT_REACHED = "SMS hourly limit reached"
HOURLY_WINDOW = timedelta(hours=1)


def _sent_since(organization_id: int, since: datetime) -> ColumnElement[bool]:
    """The organisation's SMS sent after ``since``: those its hourly cap counts."""
    return and_(
        Message.organization_id == organization_id,
        Message.channel == "sms",
        Message.status == MessageStatus.SENT,
        Message.sent_at > since,
    )


async def sms_sent_since(session: AsyncSession, organization_id: int, since: datetime) -> int:
    count = await session.scalar(
        select(func.count()).select_from(Message).where(_sent_since(organization_id, since))
    )
    return int(count or 0)


async def nth_sms_sent_since(
    session: AsyncSession, organization_id: int, since: datetime, n: int
) -> datetime | None:
    """When the ``n``-th (from 0) oldest SMS sent after ``since`` was sent: once it is an
    hour old, the organisation is back under its cap."""
    sent_at = await session.scalar(
        select(Message.sent_at)
        .where(_sent_since(organization_id, since))
        .order_by(Message.sent_at)
        .offset(n)
        .limit(1)
    )
    return sent_at  # type: ignore[no-any-return]


def _skip_reason(patient: Mapping[str, Any] | None) -> str | None:
    if opted_out(patient, "sms_opt_out"):
        return OPTED_OUT
    if contact_of(patient, "phone") is None:
        return NO_PHONE
    return None


class SendSmsExecutor:
    type = "send_sms"
    database_only = False
    single_write = True  # the Message row, once, after the send or its failure

    async def execute(self, ctx: ActionContext) -> ActionOutcome:
        template_key = required_str(ctx.config, "template")
        patient = patient_of(ctx.context)
        reason = _skip_reason(patient)
        if reason is not None:
            return skipped(reason)
        assert patient is not None
        recipient = contact_of(patient, "phone")
        assert recipient is not None

        existing = await existing_message(ctx)
        if is_sent(existing):
            assert existing is not None
            return ActionOutcome(status="success", result={"sms_id": existing.id})

        now = ctx.clock.now()
        policy = await effective_settings(ctx.session, ctx.settings, ctx.organization_id)
        resume_at = next_allowed_time(
            now, patient.get("timezone"), policy.quiet_hours_start, policy.quiet_hours_end
        )
        if resume_at is not None:
            raise DeferJob(until=resume_at, reason="quiet hours")
        window_start = now - HOURLY_WINDOW
        sent = await sms_sent_since(ctx.session, ctx.organization_id, window_start)
        if sent >= policy.sms_hourly_limit:
            if policy.sms_hourly_limit == 0:  # the organisation sends no SMS at all
                return ActionOutcome(status="failure", error=HOURLY_LIMIT_REACHED)
            # Wait for a place in the window rather than fail: the message is not lost.
            oldest = await nth_sms_sent_since(
                ctx.session, ctx.organization_id, window_start, sent - policy.sms_hourly_limit
            )
            raise DeferJob(until=(oldest or now) + HOURLY_WINDOW, reason=HOURLY_LIMIT_REACHED)

        transport = get_transports(ctx.services, ctx.settings).sms
        # The provider folds a retried request with this key into the message it already made.
        idempotency_key = f"exec-{ctx.execution_id}-action-{ctx.action_index}"

        async def send(rendered: Rendered) -> str:
            return await transport.send(
                to=recipient, body=rendered.body, idempotency_key=idempotency_key
            )

        return await render_and_send(
            ctx,
            channel="sms",
            template_key=template_key,
            recipient=recipient,
            existing=existing,
            provider=transport.provider,
            send=send,
            result_key="sms_id",
        )

    async def preview(
        self,
        session: AsyncSession,
        organization_id: int,
        config: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> dict[str, Any]:
        return await contact_preview(
            session,
            organization_id,
            config,
            context,
            channel="sms",
            field="phone",
            skip_reason=_skip_reason,
        )
