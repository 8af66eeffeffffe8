"""GET /v1/jobs: an organisation's pending, running and dead jobs (admin), for operators."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel

from careflow.auth import AdminDep
from careflow.jobs import service
from careflow.kit.deps import SessionDep
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import ListEnvelope, PageMeta, UTCDatetime, documented_as

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


class JobOut(BaseModel):
    id: int
    kind: str
    status: Annotated[str, documented_as("JobStatus")]
    attempts: int
    max_attempts: int
    run_at: UTCDatetime
    last_error: str | None
    payload: dict[str, Any]
    created_at: UTCDatetime
    updated_at: UTCDatetime


@router.get(
    "",
    summary="The organisation's jobs: queued, running, or dead after their last attempt (admin)",
    response_model=ListEnvelope[JobOut],
)
async def list_jobs(
    session: SessionDep,
    principal: AdminDep,
    page: PageDep,
    status: Annotated[Literal["queued", "running", "dead"] | None, Query()] = None,
    kind: Annotated[str | None, Query(max_length=64)] = None,
) -> ListEnvelope[JobOut]:
    # Payloads hold ids only (event, execution, rule, appointment), never patient data.
    rows, total = await service.list_jobs(session, principal, status=status, kind=kind, page=page)
    return ListEnvelope[JobOut](
        data=[JobOut.model_validate(r, from_attributes=True) for r in rows],
        meta=PageMeta(**page.meta(total)),
    )
