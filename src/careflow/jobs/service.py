"""What the HTTP edge asks of the queue: an organisation's jobs, and the depth by status and
by organisation (for the metrics).

Reads only; never commits. Payloads hold ids (event, execution, rule, appointment), never
patient data, so a job is shown as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.jobs import store
from careflow.jobs.models import Job, JobStatus
from careflow.kit.metrics import QUEUE_DEPTH, set_organization_backlogs
from careflow.kit.pagination import PageParams


async def list_jobs(
    session: AsyncSession,
    principal: Principal,
    *,
    status: str | None,
    kind: str | None,
    page: PageParams,
) -> tuple[Sequence[Job], int]:
    """The caller's organisation's jobs, most recently changed first, and the total."""
    return await store.list_page(
        session,
        principal.org_id,
        status=status,
        kind=kind,
        offset=page.offset,
        limit=page.limit,
    )


async def sample_queue(session: AsyncSession, now: datetime, *, top: int) -> dict[str, int]:
    """Read the queue's depth by status and each organisation's due jobs into the gauges
    (``kit.metrics``); the depth by status, for the caller's own use."""
    depth = await store.depth_by_status(session)
    backlogs = await store.due_by_organization(session, now)
    for status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DEAD):
        QUEUE_DEPTH.labels(status).set(depth.get(status, 0))
    set_organization_backlogs(backlogs, now=now, top=top)
    return depth


async def depth_by_status(session: AsyncSession) -> dict[str, int]:
    """How many jobs of every organisation are queued, running and dead (for metrics)."""
    return await store.depth_by_status(session)
