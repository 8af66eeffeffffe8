"""Reading the message log: every email and SMS careflow sent or tried."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.errors import not_found
from careflow.kit.pagination import PageParams
from careflow.messages import repository as repo
from careflow.messages.models import Message
from careflow.messages.repository import MessageFilters


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
