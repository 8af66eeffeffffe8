"""SQL for the message log; tenant queries start from the organisation."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from careflow import db
from careflow.db import built, dialect_of, one_of
from careflow.kit import listcounts
from careflow.kit.types import EntityRef
from careflow.messages.models import Message

_PREFIXES = {"email": "msg_", "sms": "sms_"}


def new_message_id(channel: str) -> str:
    """``msg_<hex>`` for an email, ``sms_<hex>`` for an SMS (the ids executions report)."""
    return _prefix(channel) + secrets.token_hex(12)


def action_message_id(channel: str, execution_id: int, action_index: int) -> str:
    """The id of the message an action sends, the same on every run of the action.

    An SMS names it in its status callback before the run that sent it has committed: if
    that run is rolled back (a lost answer, a worker gone), the run that follows writes the
    row under the same id, and the provider's callbacks still find it.
    """
    digest = hashlib.blake2b(
        f"{channel}:{execution_id}:{action_index}".encode(), digest_size=12, person=b"careflow-msg"
    )
    return _prefix(channel) + digest.hexdigest()


def _prefix(channel: str) -> str:
    try:
        return _PREFIXES[channel]
    except KeyError:
        raise ValueError(f"unknown channel {channel!r}") from None


@dataclass(frozen=True, slots=True)
class MessageFilters:
    channel: str | None = None
    status: str | None = None
    execution_id: int | None = None
    patient_id: EntityRef | None = None


def _org_query(organization_id: int) -> Select[Message]:
    return select(Message).where(Message.organization_id == organization_id)


async def list_for_org(
    session: AsyncSession,
    organization_id: int,
    filters: MessageFilters,
    *,
    offset: int,
    limit: int,
) -> tuple[list[Message], int]:
    """One page, newest first (``list_queries``), and how many messages match in all
    (``listcounts.total``: kept counts on PostgreSQL, but for an execution's or a patient's
    few messages)."""
    count, page = list_queries(organization_id, filters, offset=offset, limit=limit)

    async def count_where(extra: Sequence[ColumnElement[bool]]) -> int:
        return int(await session.scalar(count.where(*extra)) or 0)

    total = await listcounts.total(
        session,
        listcounts.MESSAGES,
        organization_id,
        {"channel": filters.channel, "status": filters.status},
        count_where=count_where,
        others=filters.execution_id is not None or filters.patient_id is not None,
    )
    rows = await session.scalars(page)
    return list(rows), total


def list_queries(
    organization_id: int, filters: MessageFilters, *, offset: int, limit: int
) -> tuple[Select[int], Select[Message]]:
    """The count and the page of ``list_for_org``.

    The organisation and each filter's column lead an index that ends with the page's order
    (``created_at``, ``id``; migration 0014): the page is the first entries of one index
    range read backwards, and the count reads that range from the index alone. The
    execution filter reads ``uq_messages_exec_action`` (an execution's few messages).
    """
    where = [Message.organization_id == organization_id]
    if filters.channel is not None:
        where.append(Message.channel == filters.channel)
    if filters.status is not None:
        where.append(Message.status == filters.status)
    if filters.execution_id is not None:
        where.append(Message.execution_id == filters.execution_id)
    if filters.patient_id is not None:
        where.append(Message.patient_id == filters.patient_id)
    count = select(func.count()).select_from(Message).where(*where)
    page = (
        select(Message)
        .where(*where)
        .order_by(Message.created_at.desc(), Message.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return count, page


async def get(session: AsyncSession, organization_id: int, message_id: str) -> Message | None:
    result = await session.execute(_org_query(organization_id).where(Message.id == message_id))
    return result.scalar_one_or_none()


async def get_to_update(session: AsyncSession, message_id: str) -> Message | None:
    """A message its provider reports on, locked until the transaction ends (PostgreSQL), so
    two callbacks for it apply one after the other.

    Not org-scoped: the caller is the provider, whose signed request names careflow's
    message id, and that id belongs to exactly one organisation.
    """
    query = select(Message).where(Message.id == message_id).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def provider_ids_held(session: AsyncSession, provider_message_ids: Sequence[str]) -> set[str]:
    """Which of these provider ids a message of careflow's already holds."""
    if not provider_message_ids:
        return set()
    query = select(Message.provider_message_id).where(
        Message.provider_message_id.in_(list(provider_message_ids))
    )
    return {sid for sid in (await session.execute(query)).scalars() if sid is not None}


_messages: Table = Message.__table__  # type: ignore[assignment]
_SELECT_FOR_ACTION = select(_messages).where(
    _messages.c.execution_id == bindparam("execution_id"),
    _messages.c.action_index == bindparam("action_index"),
)
_SELECT_FOR_EXECUTIONS = select(_messages).where(
    one_of(_messages.c.execution_id, "execution_ids", postgresql_array=False)
)
# PostgreSQL's: the ids as one array, one text for any batch (db.one_of).
_SELECT_FOR_EXECUTIONS_PG = select(_messages).where(
    one_of(_messages.c.execution_id, "execution_ids", postgresql_array=True)
)
_INSERT = insert(_messages)
_UPDATE = update(_messages).where(_messages.c.id == bindparam("message_id"))
_COLUMNS = tuple(column.key for column in _messages.columns)


async def get_for_action(
    session: AsyncSession, execution_id: int, action_index: int
) -> Message | None:
    """The message an action already produced, so a rerun job finds it instead of resending.

    Not org-scoped: the execution id already belongs to exactly one organisation. Built
    from the row, not added to the session: ``save_for_action`` writes it.
    """
    connection = await session.connection()
    params = {"execution_id": execution_id, "action_index": action_index}
    row = (await connection.execute(_SELECT_FOR_ACTION, params)).first()
    return built(Message, row._mapping) if row is not None else None


async def get_for_actions(
    session: AsyncSession, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], Message | None]:
    """``get_for_action`` of many (execution, action index) keys in one read; None where the
    action has no message yet."""
    out: dict[tuple[int, int], Message | None] = dict.fromkeys(keys)
    if not out:
        return out
    connection = await session.connection()
    params = {"execution_ids": sorted({execution_id for execution_id, _ in out})}
    postgresql = dialect_of(session) == "postgresql"
    stmt = _SELECT_FOR_EXECUTIONS_PG if postgresql else _SELECT_FOR_EXECUTIONS
    for row in await connection.execute(stmt, params):
        key = (row.execution_id, row.action_index)
        if key in out:
            out[key] = built(Message, row._mapping)
    return out


async def save_for_action(session: AsyncSession, message: Message, *, new: bool) -> None:
    """Insert the action's message row, or write every field of the one read before (held by
    the session's write buffer, if it has one)."""
    values = {name: getattr(message, name) for name in _COLUMNS}
    identity = ("messages", message.id)
    if new:
        await db.write(session, "messages.insert", _INSERT, values, row=identity)
    else:
        keyed = {"message_id": values.pop("id"), **values}
        await db.write(session, "messages.update", _UPDATE, keyed, row=identity)


async def count_by_status_since(
    session: AsyncSession, organization_id: int, since: datetime
) -> dict[str, int]:
    """The organisation's messages created since ``since`` (inclusive), counted by status:
    one range of ``ix_messages_org_created``."""
    rows = await session.execute(
        select(Message.status, func.count())
        .where(Message.organization_id == organization_id, Message.created_at >= since)
        .group_by(Message.status)
    )
    return {status: int(count) for status, count in rows.all()}
