"""Reading the message log: every email and SMS careflow sent or tried."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.errors import not_found
from careflow.kit.pagination import PageParams
from careflow.messages import repository as repo
from careflow.messages.models import Message
from careflow.messages.repository import MessageFilters
from careflow.messages.statuses import MESSAGE_STATUSES, RANK, STEP_TIME


async def list_messages(
    session: AsyncSession, principal: Principal, filters: MessageFilters, page: PageParams
) -> tuple[list[Message], int]:
    return await repo.list_for_org(
        session, principal.org_id, filters, offset=page.offset, limit=page.limit
    )


async def get_message(session: AsyncSession, principal: Principal, message_id: str) -> Message:
    message = await repo.get(session, principal.org_id, message_id)
    if message is None:
        raise not_found("message")
    return message


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One status callback of a message's provider."""

    message_id: str
    provider: str
    provider_message_id: str
    status: str  # one of careflow's steps (``statuses.TWILIO_STATUSES``' values)
    error_code: str | None


async def apply_status_report(
    session: AsyncSession, report: StatusReport, *, now: datetime
) -> Message | None:
    """Move the message on to the reported step; None when careflow has no such message.

    A message with no provider id yet (its send timed out, so careflow did not learn it)
    adopts the one the provider names: careflow's message reached the provider. A report
    naming a different provider id than the one the message holds changes nothing. A step
    behind the message's status only fills in that step's time, if it was not known.
    """
    message = await repo.get_to_update(session, report.message_id)
    if message is None or message.provider != report.provider:
        return None
    if message.provider_message_id is None:
        message.provider_message_id = report.provider_message_id
        current = 0  # careflow's own "failed" or "retrying": the provider's word replaces it
    elif message.provider_message_id != report.provider_message_id:
        return message
    else:
        current = RANK.get(message.status, 0)
    step_time = STEP_TIME[report.status]
    if getattr(message, step_time) is None:
        setattr(message, step_time, now)
    if RANK[report.status] > current:
        message.status = report.status
        message.error = None
        if report.error_code is not None:
            message.error_code = report.error_code
    await session.flush()
    return message


async def count_by_status_since(
    session: AsyncSession, principal: Principal, since: datetime
) -> dict[str, int]:
    """How many of the organisation's messages were created since ``since``, by their
    delivery status now (every status present, 0 when none)."""
    found = await repo.count_by_status_since(session, principal.org_id, since)
    return {status: found.get(status, 0) for status in MESSAGE_STATUSES}
