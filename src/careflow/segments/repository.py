"""Segment membership. Every query starts from the organisation."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.kit.types import EntityRef
from careflow.segments.models import SegmentMember


async def is_member(
    session: AsyncSession, organization_id: int, segment_id: int, patient_id: EntityRef
) -> bool:
    found = await session.scalar(
        select(SegmentMember.id).where(
            SegmentMember.organization_id == organization_id,
            SegmentMember.segment_id == segment_id,
            SegmentMember.patient_id == patient_id,
        )
    )
    return found is not None


async def add_member(
    session: AsyncSession,
    organization_id: int,
    segment_id: int,
    patient_id: EntityRef,
    now: datetime,
) -> bool:
    """Add the patient; False when already a member (including one added by a racing writer)."""
    if await is_member(session, organization_id, segment_id, patient_id):
        return False
    try:
        # A savepoint, so losing the race to the unique index leaves the caller's
        # transaction usable.
        async with session.begin_nested():
            session.add(
                SegmentMember(
                    organization_id=organization_id,
                    segment_id=segment_id,
                    patient_id=patient_id,
                    added_at=now,
                )
            )
    except IntegrityError:
        return False
    return True


async def remove_member(
    session: AsyncSession, organization_id: int, segment_id: int, patient_id: EntityRef
) -> bool:
    """Remove the patient; False when they were not a member."""
    result = await session.execute(
        delete(SegmentMember)
        .where(
            SegmentMember.organization_id == organization_id,
            SegmentMember.segment_id == segment_id,
            SegmentMember.patient_id == patient_id,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def list_members(
    session: AsyncSession, organization_id: int, segment_id: int, *, offset: int, limit: int
) -> tuple[list[SegmentMember], int]:
    query = select(SegmentMember).where(
        SegmentMember.organization_id == organization_id,
        SegmentMember.segment_id == segment_id,
    )
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.execute(
        query.order_by(SegmentMember.added_at, SegmentMember.id).offset(offset).limit(limit)
    )
    return list(rows.scalars()), int(total or 0)
