"""Texts patients send to an organisation's number (``POST /v1/providers/twilio/inbound``).

Verified exactly as the status callbacks are (``service.twilio_signature_valid``: Twilio's
``X-Twilio-Signature`` over careflow's public URL, and the account). The organisation is
the one whose ``sms_numbers`` hold ``To``. STOP and its synonyms opt the sending phone out
of the organisation's SMS, START and its synonyms opt it back in, HELP changes nothing
(Twilio answers those keywords itself); anything else is a ``message.received`` event about
the patient with that phone, ingested as ``POST /v1/events`` ingests events, so rules and
pathway rules act on it. The body is never logged: it is the patient's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.config import Settings
from careflow.errors import ForbiddenError, ValidationError, not_found
from careflow.events.schemas import EventIn
from careflow.events.service import ingest_event
from careflow.kit.phones import to_e164
from careflow.organizations.service import effective_settings, organization_of_number
from careflow.patients import service as patients
from careflow.providers.service import TWILIO, twilio_signature_valid

log = structlog.get_logger("careflow.providers")

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
    """Apply one text a patient sent to an organisation's number; what it was (for the
    log): ``stop``, ``start``, ``help`` or ``reply``. 403 for a request Twilio did not sign
    (or signed for another account), 404 for a ``To`` no organisation holds: neither
    stores anything."""
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    if not twilio_signature_valid(settings, path_and_query, form, signature):
        log.warning("twilio_signature_refused", message_sid=sid)
        raise ForbiddenError("Twilio signature missing or invalid")
    if form.get("AccountSid") != settings.twilio_account_sid:
        raise ForbiddenError("request for another Twilio account")
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
