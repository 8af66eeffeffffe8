"""``/console/executions``: the list with the API's filters and a patient filter, each
execution's timeline, retrying one failed execution, and retrying the failed executions a
filter selects (counted and confirmed first, at most ``BULK_LIMIT`` per request)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from careflow.console import execution_timeline, service
from careflow.console.web import PREFIX, User, reader, redirect, render, writer
from careflow.errors import ConflictError, ValidationError
from careflow.executions import service as executions
from careflow.executions.repository import ExecutionFilters
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.ids import row_id
from careflow.kit.pagination import PageParams
from careflow.kit.types import canonical_entity_id

router = APIRouter()

READ = "GET /v1/automations/executions"
RETRY = "POST /v1/automations/executions/{id}/retry"
#: At most this many executions are retried by one bulk request; the page says so.
BULK_LIMIT = 1000
PAGE_SIZE = 25
FILTERS = ("automation_rule_id", "status", "trigger_event", "from_date", "to_date", "patient_id")

Text = Annotated[str, Query(max_length=128)]
FormText = Annotated[str, Form(max_length=128)]


def _filters(values: dict[str, str]) -> tuple[ExecutionFilters | None, dict[str, str]]:
    """The filters the form's values name, or None with a message for each bad field."""
    errors: dict[str, str] = {}
    rule_id: int | None = None
    raw_rule = values.get("automation_rule_id", "")
    if raw_rule:
        if raw_rule.isascii() and raw_rule.isdigit() and 0 < int(raw_rule) < 2**63:
            rule_id = int(raw_rule)
        else:
            errors["automation_rule_id"] = "must be a rule id (a positive integer)"
    status = values.get("status") or None
    if status is not None and status not in executions.ExecutionStatus.ALL:
        errors["status"] = "must be one of " + ", ".join(executions.ExecutionStatus.ALL)
    patient = values.get("patient_id") or None
    try:
        filters = executions.build_filters(
            automation_rule_id=rule_id,
            status=status,
            trigger_event=values.get("trigger_event") or None,
            from_date=values.get("from_date") or None,
            to_date=values.get("to_date") or None,
            patient_id=canonical_entity_id(patient) if patient is not None else None,
        )
    except ValidationError as exc:
        for detail in exc.details or []:
            errors.setdefault(str(detail.get("field")), str(detail.get("message")))
        filters = None
    return (None if errors else filters), errors


def _query(values: dict[str, str]) -> Any:
    def make(**changes: Any) -> str:
        merged = {k: v for k, v in {**values, **changes}.items() if v not in (None, "")}
        return urlencode(merged)

    return make


@router.get("/executions")
async def list_page(
    request: Request,
    session: SessionDep,
    user: Annotated[User, reader(READ)],
    automation_rule_id: Text = "",
    status: Text = "",
    trigger_event: Text = "",
    from_date: Text = "",
    to_date: Text = "",
    patient_id: Text = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    retried: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    values = {
        "automation_rule_id": automation_rule_id.strip(),
        "status": status.strip(),
        "trigger_event": trigger_event.strip(),
        "from_date": from_date.strip(),
        "to_date": to_date.strip(),
        "patient_id": patient_id.strip(),
    }
    filters, errors = _filters(values)
    rows: list[Any] = []
    meta = {"total": 0, "page": page, "limit": PAGE_SIZE}
    if filters is not None:
        params = PageParams(page=page, limit=PAGE_SIZE)
        found, total = await executions.list_executions(session, user.principal, filters, params)
        rows = found
        meta = params.meta(total)
    return render(
        request,
        "executions_list.html",
        user,
        status_code=400 if errors else 200,
        rows=rows,
        meta=meta,
        values=values,
        errors=errors,
        statuses=executions.ExecutionStatus.ALL,
        query=_query(values),
        can_retry=user.can(RETRY),
        bulk_limit=BULK_LIMIT,
        retried=retried if retried.isdigit() else None,
    )


@router.post("/executions/retry")
async def bulk_retry(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, writer(RETRY)],
    automation_rule_id: FormText = "",
    status: FormText = "",
    trigger_event: FormText = "",
    from_date: FormText = "",
    to_date: FormText = "",
    patient_id: FormText = "",
    confirmed: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """First POST: how many would run ("Retry N failed executions?"); the second, with
    ``confirmed`` equal to that count, runs them."""
    values = {
        "automation_rule_id": automation_rule_id.strip(),
        "status": status.strip(),
        "trigger_event": trigger_event.strip(),
        "from_date": from_date.strip(),
        "to_date": to_date.strip(),
        "patient_id": patient_id.strip(),
    }
    filters, errors = _filters(values)
    if filters is None:
        raise ValidationError(details=[{"field": f, "message": m} for f, m in errors.items()])
    ids = await executions.retryable_ids(session, user.principal, filters, limit=BULK_LIMIT)
    count = len(ids)
    back = f"{PREFIX}/executions?{_query(values)()}"
    if not confirmed or confirmed != str(count) or count == 0:
        changed = bool(confirmed) and confirmed != str(count)
        return render(
            request,
            "executions_confirm.html",
            user,
            values=values,
            count=count,
            changed=changed,
            bulk_limit=BULK_LIMIT,
            back=back,
        )
    now = clock.now()
    retried = 0
    for execution_id in ids:
        try:
            await executions.retry_execution(session, user.principal, execution_id, now=now)
        except ConflictError:
            continue  # retried meanwhile by someone else: nothing to do for it
        await service.record_action(
            session,
            user.principal,
            action="retry",
            object_type="execution",
            object_id=execution_id,
            after={"status": "running", "bulk": True},
            now=now,
        )
        retried += 1
    return redirect(f"{PREFIX}/executions?{_query(values)(retried=retried)}", request)


@router.get("/executions/{execution_id}")
async def detail_page(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, reader("GET /v1/automations/executions/{id}")],
    execution_id: str,
    retried: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    timeline = await execution_timeline.execution_timeline(
        session, user.principal, row_id(execution_id, "execution"), now=clock.now()
    )
    return render(
        request,
        "execution_detail.html",
        user,
        t=timeline,
        execution=timeline.execution,
        can_retry=user.can(RETRY) and timeline.retryable,
        retried=bool(retried),
    )


@router.post("/executions/{execution_id}/retry")
async def retry(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, writer(RETRY)],
    execution_id: str,
) -> Response:
    now = clock.now()
    execution, _ = await executions.retry_execution(
        session, user.principal, row_id(execution_id, "execution"), now=now
    )
    await service.record_action(
        session,
        user.principal,
        action="retry",
        object_type="execution",
        object_id=execution.id,
        after={"status": execution.status},
        now=now,
    )
    return redirect(f"{PREFIX}/executions/{execution.id}?retried=1", request)
