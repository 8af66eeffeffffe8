"""What the HTTP edge and the console ask of the queue: an organisation's jobs, the dead
and retrying ones, a dead job retried or discarded (audited), the organisation's queue
figures, and the depth by status and by organisation (for the metrics).

Never commits. Payloads hold ids (event, execution, rule, appointment), never patient data,
so a job is shown as stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit import service as audit
from careflow.auth import Principal
from careflow.errors import ConflictError, not_found
from careflow.jobs import operator_store, store
from careflow.jobs.models import Job, JobStatus
from careflow.jobs.operator_store import ATTENTION_STATES, QueueSummary
from careflow.kit.metrics import QUEUE_DEPTH, set_organization_backlogs
from careflow.kit.pagination import PageParams

__all__ = ["ATTENTION_STATES", "QueueSummary"]


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


async def jobs_with_key_prefix(
    session: AsyncSession, principal: Principal, kind: str, prefix: str
) -> Sequence[Job]:
    """The caller's organisation's jobs of ``kind`` whose dedupe key starts with ``prefix``
    (still queued, running, or dead: a finished job is deleted)."""
    return await store.with_key_prefix(session, principal.org_id, kind, prefix)


async def list_needing_attention(
    session: AsyncSession,
    principal: Principal,
    *,
    state: str,
    kind: str | None,
    page: PageParams,
) -> tuple[Sequence[Job], int]:
    """The organisation's ``dead`` or ``retrying`` jobs (queued again after a failed run),
    most recently changed first, with their last error; and how many in all."""
    if state not in ATTENTION_STATES:
        raise ValueError(f"state must be one of {ATTENTION_STATES}")
    return await operator_store.list_needing_attention(
        session, principal.org_id, state=state, kind=kind, offset=page.offset, limit=page.limit
    )


async def queue_summary(session: AsyncSession, principal: Principal, now: datetime) -> QueueSummary:
    """The organisation's due jobs and the run time of the oldest (its lag is ``now`` less
    that), and its running, dead and retrying jobs."""
    return await operator_store.summary_for_org(session, principal.org_id, now=now)


async def _dead_job(session: AsyncSession, principal: Principal, job_id: int) -> Job:
    job = await operator_store.get_for_org(session, principal.org_id, job_id)
    if job is None:
        raise not_found("job")
    if job.status != JobStatus.DEAD:
        raise _not_dead(job.status)
    return job


def _not_dead(status: str) -> ConflictError:
    return ConflictError(f"Only a dead job can be retried or deleted (status: {status})",
                         code="job_not_dead")  # fmt: skip


async def retry_dead_job(
    session: AsyncSession, principal: Principal, job_id: int, *, now: datetime
) -> Job:
    """A dead job queued again, due now, its attempts counted from zero (audited)."""
    job = await _dead_job(session, principal, job_id)
    before = {"status": job.status, "attempts": job.attempts}
    if not await operator_store.revive_dead(session, principal.org_id, job_id, now=now):
        raise _not_dead("changed")  # retried or deleted by someone else meanwhile
    await session.refresh(job)
    await audit.record(
        session,
        principal,
        action="retry",
        object_type="job",
        object_id=job.id,
        before=before,
        after={"status": job.status, "attempts": job.attempts, "kind": job.kind},
        now=now,
    )
    return job


async def delete_dead_job(
    session: AsyncSession, principal: Principal, job_id: int, *, now: datetime
) -> None:
    """A dead job removed for good (audited); any other job is a 409 ``job_not_dead``."""
    job = await _dead_job(session, principal, job_id)
    before = {"status": job.status, "attempts": job.attempts, "kind": job.kind}
    if not await operator_store.delete_dead(session, principal.org_id, job_id):
        raise _not_dead("changed")
    await audit.record(
        session,
        principal,
        action="delete",
        object_type="job",
        object_id=job_id,
        before=before,
        after=None,
        now=now,
    )
