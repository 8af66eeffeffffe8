"""``/console/audit`` (admin, as ``GET /v1/audit-log``): who changed what, newest first, with
the API's filters (object type and id, actor, a time range)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from careflow.audit import service as audit
from careflow.audit.repository import AuditFilters
from careflow.console.web import User, reader, render
from careflow.kit.deps import SessionDep
from careflow.kit.pagination import PageParams

router = APIRouter()

PAGE_SIZE = 50
#: Where an entry's object is shown in the console, by its type.
OBJECT_PAGES = {
    "episode": "/console/inbox?status=&page=1#episode-{id}",
    "job": "/console/jobs",
    "execution": "/console/executions/{id}",
    "automation_rule": "/console/rules/{id}",
    "pathway_rule": "/console/pathway-rules",
}
#: Objects whose id is a patient's: shown as a link to the patient's journey.
PATIENT_OBJECTS = frozenset({"patient_preferences", "patient"})


def _moment(value: str | None, field: str, errors: dict[str, str]) -> datetime | None:
    """ISO 8601 as the API reads it (UTC without an offset); the form's date-time fields
    send ``2025-02-15T10:00``."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        errors[field] = "must be an ISO 8601 date-time, such as 2025-02-15T10:00"
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.get("/audit")
async def audit_page(
    request: Request,
    session: SessionDep,
    user: Annotated[User, reader("GET /v1/audit-log")],
    object_type: Annotated[str, Query(max_length=40)] = "",
    object_id: Annotated[str, Query(max_length=64)] = "",
    actor: Annotated[str, Query(max_length=200)] = "",
    from_: Annotated[str, Query(alias="from", max_length=40)] = "",
    to: Annotated[str, Query(max_length=40)] = "",
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    errors: dict[str, str] = {}
    filters = AuditFilters(
        object_type=object_type.strip() or None,
        object_id=object_id.strip() or None,
        actor=actor.strip() or None,
        from_time=_moment(from_.strip(), "from", errors),
        to_time=_moment(to.strip(), "to", errors),
    )
    paging = PageParams(page=page, limit=PAGE_SIZE)
    rows, total = await audit.list_entries(session, user.principal, filters, paging)
    shown = {"object_type": object_type, "object_id": object_id, "actor": actor,
             "from": from_, "to": to}  # fmt: skip

    def query(**changes: object) -> str:
        return urlencode({k: v for k, v in {**shown, "page": page, **changes}.items() if v})

    return render(
        request,
        "audit.html",
        user,
        status_code=400 if errors else 200,
        rows=rows,
        meta=paging.meta(total),
        shown=shown,
        errors=errors,
        query=query,
        object_pages=OBJECT_PAGES,
        patient_objects=PATIENT_OBJECTS,
    )
