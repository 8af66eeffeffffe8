"""``send_sms``: render a template and text it to the patient, outside their quiet hours.

The number goes out in E.164, read in the organisation's ``default_region`` when it has no
country code; one that does not parse skips the action. A patient opted out of SMS is
skipped with the reason: by the host's snapshot flag, by an admin in careflow, or because
the phone texted STOP to the organisation (``patients.service``); careflow's own records
are read ahead for a batch of steps (``executions.prefetch``). At most one message is created at
the provider per action: when a try may have reached the provider without careflow learning
the outcome (no answer in time, a connection lost, a 5xx, or an earlier run of the action
that did not commit), careflow first looks the message up in the provider's list and adopts
the provider's id when it finds it; only a request known not to have been accepted is sent
again. Each SMS asks for status callbacks naming careflow's message id, which is the same on
every run of the action, so a callback for a message whose answer was lost still finds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import ActionContext, ActionOutcome
from careflow.actions.common import contact_of, opted_out, patient_of, required_str, skipped
from careflow.actions.messaging import (
    contact_preview,
    existing_message,
    is_sent,
    outcome_result,
    render_and_send,
)
from careflow.actions.quiet_hours import next_allowed_time
from careflow.config import Settings
from careflow.delivery.errors import AmbiguousDeliveryError
from careflow.delivery.sms import SmsTransport
from careflow.delivery.transports import get_transports
from careflow.jobs.errors import DeferJob
from careflow.kit.phones import to_e164
from careflow.messages.models import Message
from careflow.messages.repository import action_message_id, provider_ids_held
from careflow.messages.statuses import MessageStatus
from careflow.organizations.service import effective_settings
from careflow.patients import service as patients
from careflow.templates.rendering import Rendered

NO_PHONE = "no phone number"
OPTED_OUT = "patient opted out of SMS"
HOURLY_LIMIT_REACHED = "SMS hourly limit reached"
NOT_A_NUMBER = "phone number is not a valid number"
OPTED_OUT_IN_CAREFLOW = "patient opted out of SMS in careflow"
STOPPED = "phone replied STOP"
HOURLY_WINDOW = timedelta(hours=1)
# How far back the provider's list is searched for a message an earlier try may have made
# (before the first recorded try, when there is one): longer than the job's retries take.
LOOKUP_WINDOW = timedelta(days=1)
STATUS_PATH = "/v1/providers/twilio/status"


def _sent_since(organization_id: int, since: datetime) -> ColumnElement[bool]:
    """The organisation's SMS the provider accepted after ``since``: those its hourly cap
    counts, whatever their delivery status since."""
    return and_(
        Message.organization_id == organization_id,
        Message.channel == "sms",
        Message.queued_at > since,
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
        select(Message.queued_at)
        .where(_sent_since(organization_id, since))
        .order_by(Message.queued_at)
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
            return ActionOutcome(status="success", result=outcome_result("sms_id", existing))

        now = ctx.clock.now()
        policy = await effective_settings(ctx.session, ctx.settings, ctx.organization_id)
        number = to_e164(recipient, policy.default_region)
        if number is None:
            return skipped(NOT_A_NUMBER)
        reason = await _careflow_opt_out(ctx, policy.default_region, number)
        if reason is not None:
            return skipped(reason)
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
        # Names the action's send in careflow's logs, the same on every run of it.
        idempotency_key = f"exec-{ctx.execution_id}-action-{ctx.action_index}"
        message_id = (
            existing.id
            if existing is not None
            else action_message_id("sms", ctx.execution_id, ctx.action_index)
        )
        callback = status_callback_url(ctx.settings, message_id)
        # A job on a later attempt, or an action with a message row but no provider id, may
        # follow a try whose request reached the provider.
        earlier_try = ctx.attempt > 1 or existing is not None
        since = min(now, existing.created_at if existing is not None else now) - LOOKUP_WINDOW

        async def send(rendered: Rendered) -> str:
            if earlier_try:
                found = await _adoptable(ctx.session, transport, number, rendered.body, since)
                if found is not None:
                    return found
            try:
                return await transport.send(
                    to=number,
                    body=rendered.body,
                    idempotency_key=idempotency_key,
                    status_callback=callback,
                )
            except AmbiguousDeliveryError:
                # Ask at once: when the provider made it, this try has its id after all.
                found = await _adoptable(ctx.session, transport, number, rendered.body, since)
                if found is not None:
                    return found
                raise

        return await render_and_send(
            ctx,
            channel="sms",
            template_key=template_key,
            recipient=number,
            existing=existing,
            provider=transport.provider,
            send=send,
            result_key="sms_id",
            accepted_status=(
                MessageStatus.QUEUED if transport.reports_status else MessageStatus.SENT
            ),
            message_id=message_id,
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


async def _careflow_opt_out(ctx: ActionContext, region: str, number: str) -> str | None:
    """Why careflow's own records forbid this SMS, or None: an admin's opt-out of the
    patient, or the phone's STOP."""
    if ctx.patient_id is not None:
        found, opted_out = (
            ctx.reads.sms_opted_out(ctx.organization_id, ctx.patient_id)
            if ctx.reads is not None
            else (False, False)
        )
        if not found:
            opted_out = await patients.has_opted_out(
                ctx.session, ctx.organization_id, ctx.patient_id, patients.SMS
            )
        if opted_out:
            return OPTED_OUT_IN_CAREFLOW
    found, stopped = (
        await ctx.reads.phone_stopped(ctx.session, ctx.organization_id, region, number)
        if ctx.reads is not None
        else (False, False)
    )
    if not found:
        stopped = bool(
            await patients.phones_opted_out_among(ctx.session, ctx.organization_id, [number])
        )
    return STOPPED if stopped else None


def status_callback_url(settings: Settings, message_id: str) -> str | None:
    """Where the provider reports this message's status: careflow's public address, or
    None when it has none (the message then stays ``queued``)."""
    if not settings.public_url:
        return None
    return f"{settings.public_url.rstrip('/')}{STATUS_PATH}?message_id={message_id}"


async def _adoptable(
    session: AsyncSession, transport: SmsTransport, to: str, body: str, since: datetime
) -> str | None:
    """The provider's id of the message an earlier try of this action made, if it made one:
    the oldest with this body to this number that no other message of careflow's holds."""
    found = await transport.find_sent(to=to, body=body, since=since)
    if not found:
        return None
    held = await provider_ids_held(session, found)
    return next((sid for sid in found if sid not in held), None)
