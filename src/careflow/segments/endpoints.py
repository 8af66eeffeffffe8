"""``/v1/segments``: segment membership, read-only (automations family)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from careflow.auth import StaffDep
from careflow.kit.deps import SessionDep
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import ListEnvelope, PageMeta
from careflow.segments import service
from careflow.segments.schemas import SegmentMemberOut

router = APIRouter(prefix="/v1/segments", tags=["segments"])


@router.get("/{segment_id}/members", summary="List a segment's members, oldest first")
async def list_members(
    session: SessionDep,
    principal: StaffDep,
    page: PageDep,
    segment_id: Annotated[int, Path(ge=-(2**31), le=2**31 - 1)],
) -> ListEnvelope[SegmentMemberOut]:
    rows, total = await service.list_members(session, principal, segment_id, page)
    return ListEnvelope(
        data=[SegmentMemberOut.of(r) for r in rows], meta=PageMeta(**page.meta(total))
    )
