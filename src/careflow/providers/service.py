"""Twilio's status callbacks: verified as Twilio signs them, then applied to the message.

Twilio signs each request with ``X-Twilio-Signature``: HMAC-SHA1, keyed with the account's
auth token, over the full URL it requested followed by the form parameters sorted by name.
That URL is careflow's public one (``CAREFLOW_PUBLIC_URL``), not the one a proxy in front
of careflow hands on, so it is rebuilt from the setting. The check is the ``twilio``
package's own ``RequestValidator``. A request that fails it changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator

from careflow.config import Settings
from careflow.errors import ForbiddenError, ValidationError, not_found
from careflow.executions.service import record_delivery_status
from careflow.messages.service import StatusReport, apply_status_report
from careflow.messages.statuses import TWILIO_STATUSES

log = structlog.get_logger("careflow.providers")

TWILIO = "twilio"
_MAX_ERROR_CODE = 16


def twilio_signature_valid(
    settings: Settings, path_and_query: str, form: Mapping[str, str], signature: str | None
) -> bool:
    """True when ``signature`` is Twilio's for this request. Without a public URL or an
    auth token careflow cannot tell, so nothing passes."""
    if not signature or not settings.public_url or not settings.twilio_auth_token:
        return False
    url = settings.public_url.rstrip("/") + path_and_query
    return bool(RequestValidator(settings.twilio_auth_token).validate(url, dict(form), signature))


async def twilio_status(
    session: AsyncSession,
    settings: Settings,
    *,
    message_id: str,
    path_and_query: str,
    form: Mapping[str, str],
    signature: str | None,
    now: datetime,
) -> None:
    """Apply one status callback to careflow's message ``message_id`` and its action."""
    if not twilio_signature_valid(settings, path_and_query, form, signature):
        log.warning("twilio_signature_refused", message_id=message_id)
        raise ForbiddenError("Twilio signature missing or invalid")
    if form.get("AccountSid") != settings.twilio_account_sid:
        raise ForbiddenError("callback for another Twilio account")
    sid = form.get("MessageSid") or form.get("SmsSid")
    provider_status = form.get("MessageStatus") or form.get("SmsStatus")
    if not sid or not provider_status:
        raise ValidationError("MessageSid and MessageStatus are required")
    status = TWILIO_STATUSES.get(provider_status)
    if status is None:
        # A step careflow does not track (``receiving``, for inbound messages): no change.
        log.info("twilio_status_ignored", message_id=message_id, provider_status=provider_status)
        return
    error_code = (form.get("ErrorCode") or "").strip()[:_MAX_ERROR_CODE] or None
    report = StatusReport(
        message_id=message_id,
        provider=TWILIO,
        provider_message_id=sid,
        status=status,
        error_code=error_code,
    )
    message = await apply_status_report(session, report, now=now)
    if message is None:
        raise not_found("message")
    if message.execution_id is not None and message.action_index is not None:
        await record_delivery_status(
            session,
            message.execution_id,
            message.action_index,
            sms_id=message.id,
            status=message.status,
        )
    log.info(
        "sms_status",
        message_id=message.id,
        org_id=message.organization_id,
        reported=status,
        status=message.status,
        error_code=message.error_code,
    )
