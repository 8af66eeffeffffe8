from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit.models import AuditEntry
from careflow.kit import listcounts


@dataclass(frozen=True, slots=True)
class AuditFilters:
    object_type: str | None = None
    object_id: str | None = None
    actor: str | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None


def _where(organization_id: int, f: AuditFilters) -> list[ColumnElement[bool]]:
    where = [AuditEntry.organization_id == organization_id]
    if f.object_type:
        where.append(AuditEntry.object_type == f.object_type)
    if f.object_id:
        where.append(AuditEntry.object_id == f.object_id)
    if f.actor:
        where.append(AuditEntry.actor_sub == f.actor)
    if f.from_time:
        where.append(AuditEntry.created_at >= f.from_time)
    if f.to_time:
        where.append(AuditEntry.created_at <= f.to_time)
    return where


async def list_entries(
    session: AsyncSession, organization_id: int, f: AuditFilters, *, limit: int, offset: int
) -> tuple[Sequence[AuditEntry], int]:
    """One page, newest first (``list_queries``), and how many entries match in all
    (``listcounts.total``: kept counts on PostgreSQL, but for one object's few entries)."""
    count, page = list_queries(organization_id, f, limit=limit, offset=offset)

    async def count_where(extra: Sequence[ColumnElement[bool]]) -> int:
        return int(await session.scalar(count.where(*extra)) or 0)

    total = await listcounts.total(
        session,
        listcounts.AUDIT_LOG,
        organization_id,
        {"object_type": f.object_type or None, "actor_sub": f.actor or None},
        count_where=count_where,
        time_column=AuditEntry.created_at,
        lower=f.from_time or None,
        upper=f.to_time or None,
        others=bool(f.object_id),
    )
    rows = await session.scalars(page)
    return rows.all(), total


def list_queries(
    organization_id: int, f: AuditFilters, *, limit: int, offset: int
) -> tuple[Select[int], Select[AuditEntry]]:
    """The count and the page of ``list_entries``.

    The organisation and each filter's column lead an index that ends with the page's order
    (``created_at``, ``id``; migration 0014): the page is the first entries of one index
    range read backwards, and the count reads that range from the index alone.
    """
    where = _where(organization_id, f)
    count = select(func.count()).select_from(AuditEntry).where(*where)
    page = (
        select(AuditEntry)
        .where(*where)
        .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return count, page
