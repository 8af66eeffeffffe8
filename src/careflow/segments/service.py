"""Segments: reading membership (``update_segment`` actions change it)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.kit.pagination import PageParams
from careflow.segments import repository as repo
from careflow.segments.models import SegmentMember


async def list_members(
    session: AsyncSession, principal: Principal, segment_id: int, page: PageParams
) -> tuple[list[SegmentMember], int]:
    """A segment exists only through its members: an unknown one is an empty page."""
    return await repo.list_members(
        session, principal.org_id, segment_id, offset=page.offset, limit=page.limit
    )
