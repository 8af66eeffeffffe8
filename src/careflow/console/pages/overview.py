"""``/console``: what needs attention in the organisation. The queue's depth and lag, the
executions of the last 24 hours by status, the failed executions and dead jobs to look at,
and the messages of the last 24 hours by delivery status: grouped counts, each bounded in
time or by the organisation's pending jobs, so the page stays cheap however much history
there is."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from careflow.console.web import User, reader, render
from careflow.executions import service as executions
from careflow.jobs import service as jobs
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.pagination import PageParams
from careflow.messages import service as messages

router = APIRouter()

#: The window of the executions and messages figures, by the app's clock.
WINDOW = timedelta(hours=24)
#: How many failed executions and dead jobs the page lists (the lists link to the rest).
SHOWN = 5


@router.get("")
async def overview(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, reader("GET /v1/automations/executions")],
) -> HTMLResponse:
    now = clock.now()
    since = now - WINDOW
    queue = await jobs.queue_summary(session, user.principal, now)
    lag = now - queue.oldest_due_at if queue.oldest_due_at is not None else None
    dead: list[object] = []
    if user.can("GET /v1/jobs"):
        rows, _ = await jobs.list_needing_attention(
            session, user.principal, state="dead", kind=None, page=PageParams(1, SHOWN)
        )
        dead = list(rows)
    return render(
        request,
        "overview.html",
        user,
        now=now,
        since=since,
        queue=queue,
        lag_seconds=max(0, int(lag.total_seconds())) if lag is not None else None,
        executions=await executions.count_by_status_since(session, user.principal, since),
        failed=await executions.failed_since(session, user.principal, since, limit=SHOWN),
        messages=await messages.count_by_status_since(session, user.principal, since),
        dead_jobs=dead,
        show_jobs=user.can("GET /v1/jobs"),
    )
