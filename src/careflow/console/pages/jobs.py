"""``/console/jobs`` (admin, as ``GET /v1/jobs``): the organisation's dead jobs and the ones
retrying after a failure, each with its last error; a dead job retried (queued again, due
now, its attempts from zero) or discarded, as ``POST /v1/jobs/{id}/retry`` and
``DELETE /v1/jobs/{id}`` do, each audited once, as the API's
operation is, the entry saying ``"via": "console"``."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from careflow.console.web import PREFIX, User, reader, redirect, render, writer
from careflow.jobs import service as jobs
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.ids import row_id
from careflow.kit.pagination import PageParams

router = APIRouter()

PAGE_SIZE = 25
State = Literal["dead", "retrying"]


def _query(**values: object) -> str:
    return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def _back(back: str) -> str:
    """The jobs page the form was posted from (its query string), never another page."""
    return f"{PREFIX}/jobs" + (f"?{back}" if back and "/" not in back and "\\" not in back else "")


@router.get("/jobs")
async def jobs_page(
    request: Request,
    session: SessionDep,
    user: Annotated[User, reader("GET /v1/jobs")],
    state: Annotated[State, Query()] = "dead",
    kind: Annotated[str | None, Query(max_length=64)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    kind = kind or None
    params = PageParams(page=page, limit=PAGE_SIZE)
    rows, total = await jobs.list_needing_attention(
        session, user.principal, state=state, kind=kind, page=params
    )

    def query(**changes: object) -> str:
        return _query(**{"state": state, "kind": kind, "page": page, **changes})

    return render(
        request,
        "jobs.html",
        user,
        rows=rows,
        meta=params.meta(total),
        state=state,
        kind=kind or "",
        query=query,
        here=query(),
        done=done,
        can_retry=user.can("POST /v1/jobs/{id}/retry"),
        can_delete=user.can("DELETE /v1/jobs/{id}"),
    )


@router.post("/jobs/{job_id}/retry")
async def retry_job(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    job_id: str,
    user: Annotated[User, writer("POST /v1/jobs/{id}/retry")],
    back: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    now = clock.now()
    job = await jobs.retry_dead_job(session, user.principal, row_id(job_id, "job"), now=now)
    return redirect(_back(_with_done(back, f"retried-{job.id}")), request)


@router.post("/jobs/{job_id}/discard")
async def discard_job(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    job_id: str,
    user: Annotated[User, writer("DELETE /v1/jobs/{id}")],
    back: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    now = clock.now()
    pk = row_id(job_id, "job")
    await jobs.delete_dead_job(session, user.principal, pk, now=now)
    return redirect(_back(_with_done(back, f"discarded-{pk}")), request)


def _with_done(back: str, done: str) -> str:
    kept = "&".join(p for p in back.split("&") if p and not p.startswith("done="))
    return "&".join(p for p in (kept, _query(done=done)) if p)
