"""``/v1/automations/executions``: execution history, and retrying failed actions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status

from careflow.auth import AdminDep, StaffDep
from careflow.executions import service
from careflow.executions.schemas import ExecutionOut, execution_out
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.ids import row_id, row_id_path
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import DataEnvelope, ListEnvelope, PageMeta

router = APIRouter(prefix="/v1/automations/executions", tags=["executions"])

# What the date filters accept (executions/service.py ``_parse_bound``).
DATE_OR_DATETIME: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date"},
        {"type": "string", "format": "date-time"},
        {"type": "null"},
    ]
}
StatusParam = Literal["success", "partial_failure", "failure", "skipped", "running"]
ExecutionIdPath = Annotated[str, row_id_path(alias="id")]


@router.get(
    "",
    summary="List executions, newest first (admin, specialist)",
    description=(
        "Filters: `automation_rule_id`, `status`, `trigger_event`, `from_date` and `to_date` "
        "(ISO 8601 dates or date-times on `executed_at`, both inclusive: a `to_date` date "
        "includes that whole day, UTC). Sorted by `executed_at` then `id`, newest first."
    ),
)
async def list_executions(
    session: SessionDep,
    principal: StaffDep,
    page: PageDep,
    automation_rule_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    status_: Annotated[StatusParam | None, Query(alias="status")] = None,
    trigger_event: Annotated[str | None, Query(max_length=64)] = None,
    from_date: Annotated[
        str | None,
        Query(
            max_length=40,
            description="ISO 8601 date, e.g. 2025-02-01, or date-time",
            json_schema_extra=DATE_OR_DATETIME,
        ),
    ] = None,
    to_date: Annotated[
        str | None,
        Query(
            max_length=40,
            description="ISO 8601 date (inclusive), or date-time",
            json_schema_extra=DATE_OR_DATETIME,
        ),
    ] = None,
) -> ListEnvelope[ExecutionOut]:
    filters = service.build_filters(
        automation_rule_id=automation_rule_id,
        status=status_,
        trigger_event=trigger_event,
        from_date=from_date,
        to_date=to_date,
    )
    items, total = await service.list_executions(session, principal, filters, page)
    return ListEnvelope(
        data=[execution_out(e, rows, detail=False) for e, rows in items],
        meta=PageMeta(**page.meta(total)),
    )


@router.get(
    "/{id}",
    summary="One execution with each action's result (admin, specialist)",
    responses={404: {"description": "`execution_not_found`"}},
)
async def get_execution(
    session: SessionDep, principal: StaffDep, execution_id: ExecutionIdPath
) -> DataEnvelope[ExecutionOut]:
    execution, rows = await service.get_execution(
        session, principal, row_id(execution_id, "execution")
    )
    return DataEnvelope(data=execution_out(execution, rows, detail=True))


@router.post(
    "/{id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Run the failed actions of a finished execution again (admin)",
    description=(
        "Only for an execution that ended `failure` or `partial_failure` (else 409 "
        "`execution_not_retryable`). The failed actions' results are cleared and they run "
        "again in order, at once; successful and skipped actions keep their results. The "
        "execution is `running` until they finish."
    ),
    responses={
        404: {"description": "`execution_not_found`"},
        409: {"description": "`execution_not_retryable`"},
    },
)
async def retry_execution(
    session: SessionDep, principal: AdminDep, clock: ClockDep, execution_id: ExecutionIdPath
) -> DataEnvelope[ExecutionOut]:
    execution, rows = await service.retry_execution(
        session, principal, row_id(execution_id, "execution"), now=clock.now()
    )
    return DataEnvelope(data=execution_out(execution, rows, detail=True))
