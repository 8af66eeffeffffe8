from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit.models import AuditEntry


@dataclass(frozen=True, slots=True)
class AuditFilters:
    object_type: str | None = None
    object_id: str | None = None
    actor: str | None = None
    from_time: datetime | None = None
    to_time: datetime | None = None


def _query(organization_id: int, f: AuditFilters) -> Select[AuditEntry]:
    stmt = select(AuditEntry).where(AuditEntry.organization_id == organization_id)
    if f.object_type:
        stmt = stmt.where(AuditEntry.object_type == f.object_type)
    if f.object_id:
        stmt = stmt.where(AuditEntry.object_id == f.object_id)
    if f.actor:
        stmt = stmt.where(AuditEntry.actor_sub == f.actor)
    if f.from_time:
        stmt = stmt.where(AuditEntry.created_at >= f.from_time)
    if f.to_time:
        stmt = stmt.where(AuditEntry.created_at <= f.to_time)
    return stmt


async def list_entries(
    session: AsyncSession, organization_id: int, f: AuditFilters, *, limit: int, offset: int
) -> tuple[Sequence[AuditEntry], int]:
    stmt = _query(organization_id, f)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(
        stmt.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return rows.all(), int(total or 0)
