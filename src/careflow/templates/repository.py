"""SQL for organisation templates; every query starts from the organisation."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table, bindparam, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.db import built
from careflow.templates.models import Template

_templates: Table = Template.__table__  # type: ignore[assignment]
_SELECT_ONE = select(_templates).where(
    _templates.c.organization_id == bindparam("org"),
    _templates.c.key == bindparam("key"),
    _templates.c.channel == bindparam("channel"),
)


async def find(
    session: AsyncSession, organization_id: int, key: str, channel: str
) -> Template | None:
    """``get`` for a worker that only reads the template: one prebuilt Core statement, the
    template built from the row and not added to the session."""
    connection = await session.connection()
    params = {"org": organization_id, "key": key, "channel": channel}
    row = (await connection.execute(_SELECT_ONE, params)).first()
    return built(Template, row._mapping) if row is not None else None


async def find_many(
    session: AsyncSession, keys: Sequence[tuple[int, str, str]]
) -> dict[tuple[int, str, str], Template | None]:
    """``find`` of many (organisation, key, channel) in one read; None where the
    organisation has no template of its own under the key."""
    out: dict[tuple[int, str, str], Template | None] = dict.fromkeys(keys)
    if not out:
        return out
    stmt = select(_templates).where(
        tuple_(_templates.c.organization_id, _templates.c.key, _templates.c.channel).in_(
            sorted(out)
        )
    )
    connection = await session.connection()
    for row in await connection.execute(stmt):
        out[(row.organization_id, row.key, row.channel)] = built(Template, row._mapping)
    return out


async def get(
    session: AsyncSession, organization_id: int, key: str, channel: str
) -> Template | None:
    result = await session.execute(
        select(Template).where(
            Template.organization_id == organization_id,
            Template.key == key,
            Template.channel == channel,
        )
    )
    return result.scalar_one_or_none()


async def list_for_org(
    session: AsyncSession, organization_id: int, channel: str | None = None
) -> list[Template]:
    query = select(Template).where(Template.organization_id == organization_id)
    if channel is not None:
        query = query.where(Template.channel == channel)
    result = await session.execute(query.order_by(Template.key, Template.channel))
    return list(result.scalars())


async def insert(session: AsyncSession, row: Template) -> bool:
    """Add a new override; False when one with the same key already exists."""
    try:
        async with session.begin_nested():
            session.add(row)
            await session.flush()
    except IntegrityError:
        return False
    return True


async def delete(session: AsyncSession, row: Template) -> None:
    await session.delete(row)
    await session.flush()
