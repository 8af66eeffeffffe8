"""``send_email``: render a template and send it to the patient's email, once per action."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import ActionContext, ActionOutcome
from careflow.actions.common import contact_of, opted_out, patient_of, required_str, skipped
from careflow.actions.messaging import contact_preview, existing_message, is_sent, render_and_send
from careflow.delivery.email import message_id_for
from careflow.delivery.transports import get_transports
from careflow.templates.rendering import Rendered

NO_ADDRESS = "no email address"
OPTED_OUT = "patient opted out of email"


def _skip_reason(patient: Mapping[str, Any] | None) -> str | None:
    if opted_out(patient, "email_opt_out"):
        return OPTED_OUT
    if contact_of(patient, "email") is None:
        return NO_ADDRESS
    return None


class SendEmailExecutor:
    type = "send_email"
    database_only = False
    single_write = True  # the Message row, once, after the send or its failure

    async def execute(self, ctx: ActionContext) -> ActionOutcome:
        template_key = required_str(ctx.config, "template")
        patient = patient_of(ctx.context)
        reason = _skip_reason(patient)
        if reason is not None:
            return skipped(reason)
        recipient = contact_of(patient, "email")
        assert recipient is not None  # _skip_reason returned None

        existing = await existing_message(ctx)
        if is_sent(existing):
            assert existing is not None
            return ActionOutcome(status="success", result={"email_id": existing.id})

        transport = get_transports(ctx.services, ctx.settings).email
        # Derived from the action's key, so a mail re-sent after a crash carries the same
        # Message-ID and the recipient's client can fold the duplicate.
        message_id = message_id_for(ctx.execution_id, ctx.action_index)

        async def send(rendered: Rendered) -> str:
            return await transport.send(
                to=recipient,
                subject=rendered.subject or "",
                body=rendered.body,
                message_id=message_id,
            )

        return await render_and_send(
            ctx,
            channel="email",
            template_key=template_key,
            recipient=recipient,
            existing=existing,
            provider=transport.provider,
            send=send,
            result_key="email_id",
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
            channel="email",
            field="email",
            skip_reason=_skip_reason,
        )
