"""Job handler ``dispatch_event``: thin, the dispatcher does the work; the job runner commits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.events.dispatch import dispatch_event, read_dispatches
from careflow.events.service import DISPATCH_KIND
from careflow.executions.runner import Runtime
from careflow.jobs.errors import PermanentJobError
from careflow.jobs.prefetch import PrefetchContext
from careflow.jobs.registry import JobContext, Priority, Sharing, job_handler


async def _read_dispatches(
    session: AsyncSession, payloads: Sequence[dict[str, Any]], _context: PrefetchContext
) -> Any:
    return await read_dispatches(session, payloads)


# An ingested event's dispatch starts what a practice is waiting for: urgent.
@job_handler(
    DISPATCH_KIND, sharing=Sharing.ROWS, prefetch=_read_dispatches, priority=Priority.URGENT
)
async def handle_dispatch_event(ctx: JobContext, payload: dict[str, Any]) -> None:
    try:
        event_pk = int(payload["event_id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PermanentJobError(f"malformed dispatch_event payload: {exc}") from exc
    runtime = Runtime(settings=ctx.settings, clock=ctx.clock, services=ctx.services)
    await dispatch_event(
        ctx.session,
        event_pk=event_pk,
        now=ctx.clock.now(),
        runtime=runtime,
        reads=ctx.prefetched,
    )
