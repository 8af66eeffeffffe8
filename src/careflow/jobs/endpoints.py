"""/v1/jobs: an organisation's pending, running and dead jobs (admin), for operators; a dead
job retried or deleted."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import Response
from pydantic import BaseModel

from careflow.auth import AdminDep
from careflow.jobs import service
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.ids import row_id, row_id_path
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import DataEnvelope, ListEnvelope, PageMeta, UTCDatetime, documented_as

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


JobIdPath = Annotated[str, row_id_path(alias="id")]


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


@router.post(
    "/{id}/retry",
    summary="Queue a dead job again, due now, with all its attempts ahead of it (admin)",
    description=(
        "Only for a `dead` job (else 409 `job_not_dead`): it becomes `queued`, due at once, "
        "with `attempts` 0 and no `last_error`. Audited (`retry` of `job`)."
    ),
    response_model=DataEnvelope[JobOut],
    responses={
        404: {"description": "`job_not_found`"},
        409: {"description": "`job_not_dead`"},
    },
)
async def retry_job(
    session: SessionDep, principal: AdminDep, clock: ClockDep, job_id: JobIdPath
) -> DataEnvelope[JobOut]:
    job = await service.retry_dead_job(session, principal, row_id(job_id, "job"), now=clock.now())
    return DataEnvelope[JobOut](data=JobOut.model_validate(job, from_attributes=True))


@router.delete(
    "/{id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a dead job (admin)",
    description=(
        "Only a `dead` job can be deleted (else 409 `job_not_dead`): its work is given up. "
        "Audited (`delete` of `job`)."
    ),
    responses={
        404: {"description": "`job_not_found`"},
        409: {"description": "`job_not_dead`"},
    },
)
async def delete_job(
    session: SessionDep, principal: AdminDep, clock: ClockDep, job_id: JobIdPath
) -> Response:
    await service.delete_dead_job(session, principal, row_id(job_id, "job"), now=clock.now())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
