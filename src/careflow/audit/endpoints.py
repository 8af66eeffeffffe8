"""GET /v1/audit-log: read-only; no endpoint updates or deletes an entry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from careflow.audit import service
from careflow.audit.repository import AuditFilters
from careflow.audit.schemas import AuditEntryOut
from careflow.auth import AdminDep
from careflow.kit.deps import SessionDep
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import ISODateTime, ListEnvelope, PageMeta

router = APIRouter(prefix="/v1/audit-log", tags=["audit"])


@router.get("", summary="List audit entries (admin)", response_model=ListEnvelope[AuditEntryOut])
async def list_audit_log(
    session: SessionDep,
    principal: AdminDep,
    page: PageDep,
    object_type: Annotated[str | None, Query(max_length=40)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=200, description="The actor's `sub`")] = None,
    from_: Annotated[
        ISODateTime | None, Query(alias="from", description="ISO 8601, inclusive")
    ] = None,
    to: Annotated[ISODateTime | None, Query(description="ISO 8601, inclusive")] = None,
) -> ListEnvelope[AuditEntryOut]:
    filters = AuditFilters(object_type, object_id, actor, from_, to)
    rows, total = await service.list_entries(session, principal, filters, page)
    return ListEnvelope[AuditEntryOut](
        data=[AuditEntryOut.model_validate(r, from_attributes=True) for r in rows],
        meta=PageMeta(**page.meta(total)),
    )
