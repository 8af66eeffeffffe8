"""What ``send_email`` and ``send_sms`` share: render, send, and record the Message row.

One row per (execution, action index), keyed by a unique index, so a rerun of the action
finds the row its earlier run wrote and updates it rather than adding a second one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import (
    ActionContext,
    ActionOutcome,
    ProviderThrottled,
    RetryableActionError,
)
from careflow.actions.common import contact_of, patient_of
from careflow.db import built
from careflow.delivery.errors import (
    PermanentDeliveryError,
    RateLimitedDeliveryError,
    TransientDeliveryError,
)
from careflow.messages.models import MAX_RECIPIENT_LENGTH, Message
from careflow.messages.repository import get_for_action, new_message_id, save_for_action
from careflow.messages.statuses import MessageStatus
from careflow.templates.builtin import builtin_template
from careflow.templates.rendering import Rendered, TemplateRenderError, TemplateSource, render
from careflow.templates.service import resolve_template, source_from_row


async def contact_preview(
    session: AsyncSession,
    organization_id: int,
    config: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    channel: str,
    field: str,
    skip_reason: Callable[[Mapping[str, Any] | None], str | None],
) -> dict[str, Any]:
    """What a message action would do (the rule test endpoint): its recipient, or why none.

    The template is looked up and rendered as a real run would: one deleted since the rule
    was saved, or one that fails on this context, is reported as the ``error`` the run would
    record, with no recipient.
    """
    patient = patient_of(context)
    reason = skip_reason(patient)
    preview: dict[str, Any] = {"template": config.get("template")}
    if reason is not None:
        return {**preview, "would_send_to": None, "skip_reason": reason}
    key = str(config.get("template"))
    source = await resolve_template(session, organization_id, key, channel)
    _, error = _rendered(source, channel, key, context)
    if error is not None:
        return {**preview, "would_send_to": None, "error": error}
    return {**preview, "would_send_to": contact_of(patient, field)}


def _rendered(
    source: TemplateSource | None, channel: str, key: str, context: Mapping[str, Any]
) -> tuple[Rendered | None, str | None]:
    """The message rendered, or the error a run records instead: an unknown template, or one
    that fails on this context."""
    if source is None:
        return None, f"unknown {channel} template {key!r}"
    try:
        return render(source, context), None
    except TemplateRenderError as exc:
        return None, f"template {key!r} failed to render: {exc}"


async def existing_message(ctx: ActionContext) -> Message | None:
    """The message this action produced on an earlier run, if any (read ahead in a batch)."""
    if ctx.reads is not None:
        found, message = ctx.reads.take_message(ctx.execution_id, ctx.action_index)
        if found:
            return message
    return await get_for_action(ctx.session, ctx.execution_id, ctx.action_index)


async def _template(ctx: ActionContext, key: str, channel: str) -> TemplateSource | None:
    if ctx.reads is not None:
        found, row = ctx.reads.template(ctx.organization_id, key, channel)
        if found:
            return source_from_row(row) if row is not None else builtin_template(key, channel)
    return await resolve_template(ctx.session, ctx.organization_id, key, channel)


def is_sent(message: Message | None) -> bool:
    """True once the provider accepted the message (it gave it an id), whatever became of
    it since: such a message is never sent again."""
    return message is not None and message.provider_message_id is not None


async def record_attempt(
    ctx: ActionContext,
    existing: Message | None,
    *,
    channel: str,
    recipient: str,
    template: str,
    rendered: Rendered | None,
    provider: str,
    status: str,
    now: datetime,
    provider_message_id: str | None = None,
    error: str | None = None,
    message_id: str | None = None,
) -> Message:
    """Write the action's Message row (insert, or update the one an earlier run left).

    ``message_id`` names a new row (else a random id is drawn).
    """
    # Within one job the runner's attempt number is the count; an execution retried later
    # adds to the attempts its earlier run recorded.
    changes: dict[str, Any] = {
        "attempts": max(((existing.attempts if existing else 0) or 0) + 1, ctx.attempt),
        "recipient": recipient,
        "template": template,
        "subject": rendered.subject if rendered is not None else None,
        "body": rendered.body if rendered is not None else "",
        "provider": provider,
        "status": status,
        "error": error,
    }
    if provider_message_id is not None:
        changes["provider_message_id"] = provider_message_id
        if channel == "sms":  # accepted: what the hourly cap counts
            changes["queued_at"] = now
    if status == MessageStatus.SENT:
        changes["sent_at"] = now
    if existing is None:
        message = built(
            Message,
            {
                "id": message_id or new_message_id(channel),
                "organization_id": ctx.organization_id,
                "channel": channel,
                "patient_id": ctx.patient_id,
                "execution_id": ctx.execution_id,
                "action_index": ctx.action_index,
                "created_at": now,
                "provider_message_id": None,
                "queued_at": None,
                "sent_at": None,
                "delivered_at": None,
                "failed_at": None,
                "error_code": None,
                **changes,
            },
        )
    else:
        message = existing
        for name, value in changes.items():
            setattr(message, name, value)
    await save_for_action(ctx.session, message, new=existing is None)
    return message


async def render_and_send(
    ctx: ActionContext,
    *,
    channel: str,
    template_key: str,
    recipient: str,
    existing: Message | None,
    provider: str,
    send: Callable[[Rendered], Awaitable[str]],
    result_key: str,
    accepted_status: str = MessageStatus.SENT,
    message_id: str | None = None,
) -> ActionOutcome:
    """Render the template, hand it to the transport, and record what happened.

    ``accepted_status`` is the status of a message the transport took (``sent`` for an
    email the SMTP server took, ``queued`` for an SMS, whose provider reports the rest);
    ``message_id`` names the message when it is new.

    Failures that retrying cannot fix are returned as a failure outcome rather than
    raised: the runner rolls the transaction back when an exception escapes, and the
    failed Message row must survive so the message log shows what was tried.
    """
    if len(recipient) > MAX_RECIPIENT_LENGTH:
        # No provider takes it, and the message log cannot hold it: a failure with its
        # reason, tried nowhere (retrying cannot make it shorter).
        return ActionOutcome(
            status="failure",
            error=f"{channel} recipient is longer than {MAX_RECIPIENT_LENGTH} characters",
        )
    now = ctx.clock.now()

    async def record(status: str, rendered: Rendered | None, **kwargs: str | None) -> Message:
        return await record_attempt(
            ctx,
            existing,
            channel=channel,
            recipient=recipient,
            template=template_key,
            rendered=rendered,
            provider=provider,
            status=status,
            now=now,
            message_id=message_id,
            **kwargs,
        )

    source = await _template(ctx, template_key, channel)
    rendered, error = _rendered(source, channel, template_key, ctx.context)
    if rendered is None:
        message = await record(MessageStatus.FAILED, None, error=error)
        return ActionOutcome(status="failure", error=error, result={result_key: message.id})

    try:
        provider_id = await send(rendered)
    except RateLimitedDeliveryError as exc:
        # Refused for rate, and not acted on: nothing to record; the step waits as long as
        # the provider asked (or careflow's backoff), with no attempt counted.
        seconds = exc.retry_after
        if seconds is None:
            seconds = ctx.settings.provider_backoff_seconds
        raise ProviderThrottled(
            now + timedelta(seconds=seconds), str(exc), channel=channel
        ) from None
    except TransientDeliveryError as exc:
        error = str(exc)
        if not ctx.is_last_attempt:
            # Rolled back with the job's transaction when the error propagates; the row is
            # written for good on success or on the last attempt.
            await record(MessageStatus.RETRYING, rendered, error=error)
            raise RetryableActionError(error) from None
        message = await record(MessageStatus.FAILED, rendered, error=error)
        return ActionOutcome(status="failure", error=error, result={result_key: message.id})
    except PermanentDeliveryError as exc:
        error = str(exc)
        message = await record(MessageStatus.FAILED, rendered, error=error)
        return ActionOutcome(status="failure", error=error, result={result_key: message.id})

    message = await record(accepted_status, rendered, provider_message_id=provider_id)
    return ActionOutcome(status="success", result=outcome_result(result_key, message))


def outcome_result(result_key: str, message: Message) -> dict[str, Any]:
    """What an action's result says of its message: its id, and for an SMS the delivery
    status (kept current by the provider's callbacks)."""
    result: dict[str, Any] = {result_key: message.id}
    if message.channel == "sms":
        result["delivery_status"] = message.status
    return result
