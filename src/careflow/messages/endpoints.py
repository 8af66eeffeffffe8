"""``/v1/messages``: the message log, read-only (automations family)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from careflow.auth import StaffDep
from careflow.kit.deps import SessionDep
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import MAX_ROW_ID, DataEnvelope, ListEnvelope, PageMeta
from careflow.kit.types import canonical_entity_id
from careflow.messages import service
from careflow.messages.repository import MessageFilters
from careflow.messages.schemas import ChannelParam, MessageDetail, MessageOut

router = APIRouter(prefix="/v1/messages", tags=["messages"])


@router.get("", summary="List emails and SMS careflow sent or tried, newest first")
async def list_messages(
    session: SessionDep,
    principal: StaffDep,
    page: PageDep,
    channel: ChannelParam | None = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    execution_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    patient_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
) -> ListEnvelope[MessageOut]:
    filters = MessageFilters(
        channel=channel,
        status=status,
        execution_id=execution_id,
        patient_id=canonical_entity_id(patient_id) if patient_id is not None else None,
    )
    rows, total = await service.list_messages(session, principal, filters, page)
    return ListEnvelope(data=[MessageOut.of(r) for r in rows], meta=PageMeta(**page.meta(total)))


@router.get("/{message_id}", summary="Get one message, with its body")
async def get_message(
    session: SessionDep,
    principal: StaffDep,
    message_id: Annotated[str, Path(max_length=40)],
) -> DataEnvelope[MessageDetail]:
    row = await service.get_message(session, principal, message_id)
    return DataEnvelope(data=MessageDetail.of(row))
