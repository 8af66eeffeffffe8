"""Twilio's status callbacks: verified as Twilio signs them, then applied to the message.

Twilio signs each request with ``X-Twilio-Signature``: HMAC-SHA1, keyed with the account's
auth token, over the full URL it requested followed by the form parameters sorted by name.
That URL is careflow's public one (``CAREFLOW_PUBLIC_URL``), not the one a proxy in front
of careflow hands on, so it is rebuilt from the setting. The check is the ``twilio``
package's own ``RequestValidator``. A request that fails it changes nothing.

A callback can outrun careflow's record of the message: careflow writes the message, with
the provider's SID, when the job that sent it commits, which is after Twilio answered (a
batch of SMS commits after its slowest send), or, when Twilio's answer was lost, after the
lookup that adopts the SID. Twilio does not send a callback again, so one careflow cannot
apply yet is held as a job (``HELD_STATUS_KIND``) that applies it once the message is
there, with the time it arrived, or drops it after ``HOLD_FOR``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator

from careflow.config import Settings
from careflow.errors import ForbiddenError, ValidationError
from careflow.executions.service import record_delivery_status
from careflow.jobs.errors import DeferJob
from careflow.jobs.queue import enqueue
from careflow.messages.service import StatusReport, apply_status_report
from careflow.messages.statuses import TWILIO_STATUSES

log = structlog.get_logger("careflow.providers")

TWILIO = "twilio"
_MAX_ERROR_CODE = 16
#: The job kind of a status callback that arrived before careflow recorded its message.
HELD_STATUS_KIND = "twilio_status_held"
#: How long a held callback waits for its message: longer than a send's retries take.
HOLD_FOR = timedelta(hours=1)


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
) -> bool:
    """Apply one status callback to careflow's message ``message_id`` and its action:
    True when applied (or a step careflow does not track), False when held until careflow
    has recorded the message."""
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
        return True
    error_code = (form.get("ErrorCode") or "").strip()[:_MAX_ERROR_CODE] or None
    report = StatusReport(
        message_id=message_id,
        provider=TWILIO,
        provider_message_id=sid,
        status=status,
        error_code=error_code,
    )
    if await _apply(session, report, now=now):
        return True
    # Not recorded yet: the job that sent it has not committed. Held, and applied then.
    await enqueue(
        session,
        HELD_STATUS_KIND,
        {
            "message_id": message_id,
            "provider_message_id": sid,
            "status": status,
            "error_code": error_code,
            "received_at": now.isoformat(),
        },
        run_at=now + recheck_delay(timedelta(0)),
        now=now,
        dedupe_key=f"{HELD_STATUS_KIND}:{message_id}:{sid}:{status}",
    )
    log.info("twilio_status_held", message_id=message_id, reported=status)
    return False


def recheck_delay(waited: timedelta) -> timedelta:
    """When a held callback looks for its message again: soon at first (a batch commits
    within seconds), then less often (a send retried with backoff), at most every minute."""
    return min(max(timedelta(seconds=2), waited / 4), timedelta(minutes=1))


async def apply_held_status(session: AsyncSession, payload: dict[str, Any], now: datetime) -> None:
    """Apply a held callback, as of when it arrived; wait again while its message is not
    recorded, up to ``HOLD_FOR``."""
    received = datetime.fromisoformat(payload["received_at"])
    report = StatusReport(
        message_id=payload["message_id"],
        provider=TWILIO,
        provider_message_id=payload["provider_message_id"],
        status=payload["status"],
        error_code=payload.get("error_code"),
    )
    if await _apply(session, report, now=received):
        return
    waited = now - received
    if waited >= HOLD_FOR:
        log.warning("twilio_status_dropped", message_id=report.message_id, reported=report.status)
        return
    raise DeferJob(until=now + recheck_delay(waited), reason="message not recorded yet")


async def _apply(session: AsyncSession, report: StatusReport, *, now: datetime) -> bool:
    """Apply ``report`` to the message and its action; False when there is no message."""
    message = await apply_status_report(session, report, now=now)
    if message is None:
        return False
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
        reported=report.status,
        status=message.status,
        error_code=message.error_code,
    )
    return True
