"""``send_email``: render a template and send it to the patient's email, once per action.

Every email carries a Message-ID made of the action's key and this deployment's id, the
headers of an automatic message (``Auto-Submitted``), the ``Reply-To`` when one is
configured and, when careflow knows its public address, a one-click unsubscribe link
(``List-Unsubscribe`` + ``List-Unsubscribe-Post``, RFC 8058). A patient who opted out in
the host's snapshot, or through that link, gets nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import ActionContext, ActionOutcome
from careflow.actions.common import contact_of, opted_out, patient_of, required_str, skipped
from careflow.actions.messaging import contact_preview, existing_message, is_sent, render_and_send
from careflow.delivery.email import message_id_for
from careflow.delivery.transports import get_transports
from careflow.installation import service as installation
from careflow.kit.types import EntityRef
from careflow.patients import service as patients
from careflow.templates.rendering import Rendered
from careflow.unsubscribe import service as unsubscribe

NO_ADDRESS = "no email address"
OPTED_OUT = "patient opted out of email"
UNSUBSCRIBED = "patient unsubscribed from email"


def _skip_reason(patient: Mapping[str, Any] | None) -> str | None:
    if opted_out(patient, "email_opt_out"):
        return OPTED_OUT
    if contact_of(patient, "email") is None:
        return NO_ADDRESS
    return None


async def _unsubscribed(ctx: ActionContext, patient_id: EntityRef) -> bool:
    if ctx.reads is not None:
        found, opted_out = ctx.reads.email_opted_out(ctx.organization_id, patient_id)
        if found:
            return opted_out
    return await patients.has_opted_out(ctx.session, ctx.organization_id, patient_id, "email")


async def _headers(ctx: ActionContext) -> dict[str, str]:
    """The headers every email of this action carries besides From, To, Subject and the
    Message-ID: an automatic message's, the reply address, the unsubscribe link."""
    settings = ctx.settings
    headers = {"Auto-Submitted": "auto-generated"}
    if settings.email_reply_to:
        headers["Reply-To"] = settings.email_reply_to
    if settings.public_url and ctx.patient_id is not None:
        link = await unsubscribe.link_for(
            ctx.session,
            public_url=settings.public_url,
            organization_id=ctx.organization_id,
            patient_id=ctx.patient_id,
            now=ctx.clock.now(),
            services=ctx.services,
        )
        headers["List-Unsubscribe"] = f"<{link}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


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
        if ctx.patient_id is not None and await _unsubscribed(ctx, ctx.patient_id):
            return skipped(UNSUBSCRIBED)

        existing = await existing_message(ctx)
        if is_sent(existing):
            assert existing is not None
            return ActionOutcome(status="success", result={"email_id": existing.id})

        transport = get_transports(ctx.services, ctx.settings).email
        # Derived from the action's key, so a mail re-sent after a crash carries the same
        # Message-ID and the recipient's client can fold the duplicate; and from this
        # deployment's id, so no other careflow ever sends one with the same Message-ID.
        identity = await installation.identity(ctx.session, ctx.clock.now(), ctx.services)
        message_id = message_id_for(
            identity.installation_id,
            ctx.execution_id,
            ctx.action_index,
            ctx.settings.email_domain,
        )
        headers = await _headers(ctx)

        async def send(rendered: Rendered) -> str:
            return await transport.send(
                to=recipient,
                subject=rendered.subject or "",
                body=rendered.body,
                message_id=message_id,
                headers=headers,
                html=rendered.html,
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
        patient = patient_of(context)
        patient_id = patient.get("id") if patient is not None else None
        if (
            _skip_reason(patient) is None
            and isinstance(patient_id, int | str)
            and await patients.has_opted_out(session, organization_id, patient_id, "email")
        ):
            return {
                "template": config.get("template"),
                "would_send_to": None,
                "skip_reason": UNSUBSCRIBED,
            }
        return await contact_preview(
            session,
            organization_id,
            config,
            context,
            channel="email",
            field="email",
            skip_reason=_skip_reason,
        )
