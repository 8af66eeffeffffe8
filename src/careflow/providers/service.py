"""Twilio's status callbacks and inbound texts: verified as Twilio signs them, then applied.

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
from careflow.events.schemas import EventIn
from careflow.events.service import ingest_event
from careflow.executions.service import record_delivery_status
from careflow.kit.phones import to_e164
from careflow.messages.service import StatusReport, apply_status_report
from careflow.messages.statuses import TWILIO_STATUSES
from careflow.organizations.service import effective_settings, organization_of_number
from careflow.patients import service as patients

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


def _check_signature(
    settings: Settings,
    path_and_query: str,
    form: Mapping[str, str],
    signature: str | None,
    **log_ids: str,
) -> None:
    """The 403 of a request Twilio did not sign, or signed for another account."""
    if not twilio_signature_valid(settings, path_and_query, form, signature):
        log.warning("twilio_signature_refused", **log_ids)
        raise ForbiddenError("Twilio signature missing or invalid")
    if form.get("AccountSid") != settings.twilio_account_sid:
        raise ForbiddenError("callback for another Twilio account")


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
    _check_signature(settings, path_and_query, form, signature, message_id=message_id)
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


# Twilio's own opt-out keywords (its Advanced Opt-Out defaults), compared in capitals with
# every space removed.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP", "YES"})
HELP_WORDS = frozenset({"HELP"})
MESSAGE_RECEIVED = "message.received"


def keyword_of(body: str) -> str:
    return "".join(body.split()).upper()


async def twilio_inbound(
    session: AsyncSession,
    settings: Settings,
    *,
    path_and_query: str,
    form: Mapping[str, str],
    signature: str | None,
    now: datetime,
) -> str:
    """Apply one text a patient sent to an organisation's number; what it was (for tests
    and the log): ``stop``, ``start``, ``help`` or ``reply``.

    The organisation is the one whose ``sms_numbers`` hold ``To`` (404 when none does, and
    nothing is stored). STOP and its synonyms opt the sending phone out of the
    organisation's SMS, START and its synonyms opt it back in, HELP changes nothing (Twilio
    answers those keywords itself); anything else is a ``message.received`` event about the
    patient with that phone, ingested as ``POST /v1/events`` ingests events. The body is
    never logged: it is the patient's.
    """
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    _check_signature(settings, path_and_query, form, signature, message_sid=sid)
    # Twilio writes ``To`` in E.164, as ``sms_numbers`` holds it.
    to = form.get("To") or ""
    sender = form.get("From") or ""
    if not sid or not sender:
        raise ValidationError("MessageSid and From are required")
    organization_id = await organization_of_number(session, to) if to else None
    if organization_id is None:
        log.info("twilio_inbound_unknown_number", message_sid=sid)
        raise not_found("sms_number")
    region = (await effective_settings(session, settings, organization_id)).default_region
    phone = to_e164(sender, region)
    body = form.get("Body") or ""
    keyword = keyword_of(body)
    kind = (
        "stop"
        if keyword in STOP_WORDS
        else "start"
        if keyword in START_WORDS
        else "help"
        if keyword in HELP_WORDS
        else "reply"
    )
    found = (
        await patients.patients_with_phone(session, organization_id, phone, region) if phone else []
    )
    if kind == "stop" and phone is not None:
        await patients.record_sms_stop(session, organization_id, phone, found, now)
    elif kind == "start" and phone is not None:
        await patients.record_sms_start(session, organization_id, phone, found, now)
    elif kind == "reply":
        message: dict[str, object] = {
            "channel": "sms",
            "provider": TWILIO,
            "provider_message_id": sid,
            "from": phone or sender,
            "to": to,
            "body": body,
        }
        if found:
            # Several patients may share a phone (a family's): the one updated last.
            message["patient_id"] = found[0]
        ingested = await ingest_event(
            session,
            organization_id,
            EventIn(event_id=f"twilio:{sid}", type=MESSAGE_RECEIVED, data={"message": message}),
            now=now,
        )
        log.info(
            "sms_received", org_id=organization_id, message_sid=sid, event_pk=ingested.event.id
        )
        return kind
    log.info("sms_keyword", org_id=organization_id, message_sid=sid, keyword=kind)
    return kind
