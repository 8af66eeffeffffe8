"""The SQL of an operator's reads and writes of one organisation's jobs: the dead and
retrying ones, a dead job queued again or removed, and the queue's figures for the console's
overview.

Apart from the lifecycle's SQL (``store``): none of these touches a claimed job, and every
statement is scoped to the organisation. Time comes from the caller's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.jobs.models import Job, JobStatus

jobs: Table = Job.__table__  # type: ignore[assignment]


#: The jobs an operator looks at: ``dead`` ones, and ``retrying`` ones (queued again after
#: at least one failed run, so they carry the error of their last).
ATTENTION_STATES = ("dead", "retrying")


def _needing_attention(organization_id: int, state: str) -> Any:
    if state == "dead":
        return (Job.organization_id == organization_id) & (Job.status == JobStatus.DEAD)
    return (
        (Job.organization_id == organization_id)
        & (Job.status == JobStatus.QUEUED)
        & (Job.attempts > 0)
        & Job.last_error.is_not(None)
    )


async def list_needing_attention(
    session: AsyncSession,
    organization_id: int,
    *,
    state: str,
    kind: str | None,
    offset: int,
    limit: int,
) -> tuple[Sequence[Job], int]:
    """One organisation's ``dead`` or ``retrying`` jobs, most recently changed first, and
    how many there are in all."""
    query = select(Job).where(_needing_attention(organization_id, state))
    if kind is not None:
        query = query.where(Job.kind == kind)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(Job.updated_at.desc(), Job.id.desc()).offset(offset).limit(limit)
    )
    return rows.all(), int(total or 0)


async def get_for_org(session: AsyncSession, organization_id: int, job_id: int) -> Job | None:
    return await session.scalar(
        select(Job).where(Job.id == job_id, Job.organization_id == organization_id)
    )


async def revive_dead(
    session: AsyncSession, organization_id: int, job_id: int, *, now: datetime
) -> bool:
    """A dead job queued again, due ``now``, with all its attempts ahead of it; False if
    the job is not (or no longer) dead. Conditional on the status, so two retries at once
    queue it once. Its dedupe key stays released (``bury``): the job runs as itself."""
    result = await session.execute(
        update(jobs)
        .where(
            jobs.c.id == job_id,
            jobs.c.organization_id == organization_id,
            jobs.c.status == JobStatus.DEAD,
        )
        .values(
            status=JobStatus.QUEUED,
            run_at=now,
            attempts=0,
            last_error=None,
            locked_by=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def delete_dead(session: AsyncSession, organization_id: int, job_id: int) -> bool:
    """Remove a dead job; False if it is not (or no longer) dead."""
    result = await session.execute(
        delete(jobs).where(
            jobs.c.id == job_id,
            jobs.c.organization_id == organization_id,
            jobs.c.status == JobStatus.DEAD,
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """One organisation's queue at a moment: its jobs due and not yet claimed, the run time
    of the oldest of them, and how many are running, dead and retrying."""

    due: int
    oldest_due_at: datetime | None
    running: int
    dead: int
    retrying: int


async def summary_for_org(
    session: AsyncSession, organization_id: int, *, now: datetime
) -> QueueSummary:
    """One grouped pass over the organisation's jobs (done jobs are deleted, so the table
    holds only pending and dead work)."""
    due = (jobs.c.status == JobStatus.QUEUED) & (jobs.c.run_at <= now)
    retrying = (
        (jobs.c.status == JobStatus.QUEUED) & (jobs.c.attempts > 0) & jobs.c.last_error.is_not(None)
    )
    row = (
        await session.execute(
            select(
                func.count().filter(due),
                func.min(case((due, jobs.c.run_at))),
                func.count().filter(jobs.c.status == JobStatus.RUNNING),
                func.count().filter(jobs.c.status == JobStatus.DEAD),
                func.count().filter(retrying),
            ).where(jobs.c.organization_id == organization_id)
        )
    ).one()
    return QueueSummary(
        due=int(row[0] or 0),
        oldest_due_at=row[1],
        running=int(row[2] or 0),
        dead=int(row[3] or 0),
        retrying=int(row[4] or 0),
    )
