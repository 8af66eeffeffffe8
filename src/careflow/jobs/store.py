"""The SQL of the job lifecycle: lease, rescue, complete, fail, release (the claim is
``jobs.claim``); and the reads and removals other domains ask of the queue (their jobs by
ref, an organisation's page, the depth by organisation).

Every write made on behalf of a claimed job is fenced on ``locked_by`` and ``attempts``:
once a lease expires and the job is rescued (or claimed again, which bumps ``attempts``),
the late worker's statements match no row and change nothing.

Time always comes from the caller's clock, never the database's ``now()``, so a test's
FrozenClock decides what is due and what has expired.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Integer,
    Table,
    bindparam,
    case,
    delete,
    func,
    literal_column,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.db import dialect_of, pairs_of
from careflow.jobs.models import Job, JobStatus
from careflow.kit.metrics import OrganizationBacklog

jobs: Table = Job.__table__  # type: ignore[assignment]

MAX_BACKOFF_SECONDS = 3600.0
LEASE_LOST_ERROR = "lease expired: the worker running this job stopped renewing it"


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int  # attempts after this claim: 1 on the first run
    max_attempts: int
    run_at: datetime
    organization_id: int | None
    worker: str  # the locked_by this claim wrote; part of every fence
    # The request whose work this is, and the span that enqueued it (``Job.request_id``,
    # ``Job.traceparent``).
    request_id: str | None = None
    traceparent: str | None = None
    priority: int = 1  # registry.Priority.NORMAL

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


def backoff_seconds(
    attempt: int,
    base: float,
    *,
    cap: float = MAX_BACKOFF_SECONDS,
    rng: random.Random | None = None,
) -> float:
    """``base * 2^(attempt-1)``, capped, then ±20% jitter so failed jobs don't retry in step."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay * (rng or random).uniform(0.8, 1.2)


def _status_is(status: str) -> Any:
    # Inlined, not bound: PostgreSQL only uses the partial indexes (``WHERE status =
    # 'queued'``) when the predicate is visible in the plan, and asyncpg's prepared
    # statements would otherwise end up on a generic plan that cannot prove it.
    return jobs.c.status == literal_column(f"'{status}'")


# A job's fence: the row is still this claim's (same worker, same attempt). Bound, so the
# statements that carry it can be built once; ``_fence_of`` gives its parameters.
_FENCE = (
    (jobs.c.id == bindparam("job_id"))
    & (jobs.c.locked_by == bindparam("worker"))
    & (jobs.c.attempts == bindparam("attempt"))
)
_COMPLETE = delete(jobs).where(_FENCE)  # runs for every finished job


def _fence_of(job: ClaimedJob) -> dict[str, Any]:
    return {"job_id": job.id, "worker": job.worker, "attempt": job.attempt}


# The fence of many jobs of one worker on PostgreSQL: the same text for any number of jobs,
# prepared once (``db.pairs_of``).
# Its parameters are named apart from every column: an UPDATE would take a parameter named
# like a column as a value to SET.
_FENCE_ALL = (jobs.c.locked_by == bindparam("fence_worker")) & pairs_of(
    (jobs.c.id, jobs.c.attempts), ("fence_ids", "fence_attempts"), (BigInteger(), Integer())
)


def _still_held_select(fence: Any) -> Any:
    return select(jobs.c.id).where(fence, _status_is(JobStatus.RUNNING))


_STILL_HELD = _still_held_select(_FENCE_ALL)


def _fenced_all(session: AsyncSession, batch: list[ClaimedJob]) -> tuple[Any, dict[str, Any]]:
    """The fence of each job in ``batch``, all claimed by one worker, and its parameters."""
    if dialect_of(session) == "postgresql":
        params = {
            "fence_worker": batch[0].worker,
            "fence_ids": [job.id for job in batch],
            "fence_attempts": [job.attempt for job in batch],
        }
        return _FENCE_ALL, params
    pairs = tuple_(jobs.c.id, jobs.c.attempts).in_([(job.id, job.attempt) for job in batch])
    return (jobs.c.locked_by == batch[0].worker) & pairs, {}


async def rescue_expired(session: AsyncSession, now: datetime) -> int:
    """Give jobs whose lease ran out back to the queue (or bury them if out of attempts).

    A job whose worker died mid-run would otherwise stay ``running`` forever. Clearing
    ``locked_by`` is what makes the dead worker's late completion miss its fence.
    """
    expired = select(jobs.c.id).where(_status_is(JobStatus.RUNNING), jobs.c.lease_expires_at < now)
    if session.get_bind().dialect.name == "postgresql":
        # Another worker rescuing (or a heartbeat renewing) the same row: skip it, never wait.
        expired = expired.with_for_update(skip_locked=True)
    out_of_attempts = jobs.c.attempts >= jobs.c.max_attempts
    stmt = (
        update(jobs)
        .where(jobs.c.id.in_(expired))
        .values(
            status=case((out_of_attempts, JobStatus.DEAD), else_=JobStatus.QUEUED),
            last_error=LEASE_LOST_ERROR,
            dedupe_key=case((out_of_attempts, None), else_=jobs.c.dedupe_key),
            locked_by=None,
            lease_expires_at=None,
            updated_at=now,
        )
    )
    result = await session.execute(stmt)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def complete(session: AsyncSession, job: ClaimedJob) -> bool:
    """Delete the finished job in the handler's own transaction; False if the lease was lost."""
    connection = await session.connection()
    result = await connection.execute(_COMPLETE, _fence_of(job))
    return bool(result.rowcount)


async def complete_many(session: AsyncSession, batch: list[ClaimedJob]) -> int:
    """Delete a batch of finished jobs in one statement; how many still held their lease.

    Fewer than ``len(batch)`` means some lease was lost: the caller must roll back.
    """
    fence, params = _fenced_all(session, batch)
    result = await session.execute(delete(jobs).where(fence), params)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def still_held(session: AsyncSession, batch: list[ClaimedJob]) -> set[int]:
    """The ids of ``batch`` (one worker's jobs) whose lease has not been taken over. A plain
    read: it locks nothing, so a rescue of these jobs is never made to wait."""
    fence, params = _fenced_all(session, batch)
    # Every batch of message steps asks this: on PostgreSQL the fence is the same bound
    # clause each time, so the statement is built once.
    stmt = _STILL_HELD if fence is _FENCE_ALL else _still_held_select(fence)
    rows = await session.execute(stmt, params)
    return set(rows.scalars())


async def extend_leases(
    session: AsyncSession, held: list[ClaimedJob], *, now: datetime, lease: timedelta
) -> set[int]:
    """Renew the leases of ``held`` (one worker's jobs); the ids whose lease still held."""
    fence, params = _fenced_all(session, held)
    rows = await session.execute(
        update(jobs)
        .where(fence, _status_is(JobStatus.RUNNING))
        .values(lease_expires_at=now + lease, updated_at=now)
        .returning(jobs.c.id),
        params,
    )
    return set(rows.scalars())


async def release_many(session: AsyncSession, batch: list[ClaimedJob], *, now: datetime) -> int:
    """Give claimed jobs back untouched: queued again, this claim not counted."""
    fence, params = _fenced_all(session, batch)
    result = await session.execute(
        update(jobs)
        .where(fence)
        .values(
            status=JobStatus.QUEUED,
            attempts=jobs.c.attempts - 1,
            locked_by=None,
            lease_expires_at=None,
            updated_at=now,
        ),
        params,
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def requeue(
    session: AsyncSession,
    job: ClaimedJob,
    *,
    run_at: datetime,
    now: datetime,
    error: str | None,
    count_attempt: bool = True,
) -> bool:
    """Back to the queue at ``run_at``; without ``count_attempt`` this run never happened."""
    values: dict[str, Any] = {
        "status": JobStatus.QUEUED,
        "run_at": run_at,
        "locked_by": None,
        "lease_expires_at": None,
        "updated_at": now,
    }
    if error is not None:
        values["last_error"] = error
    if not count_attempt:
        values["attempts"] = jobs.c.attempts - 1
    result = await session.execute(update(jobs).where(_FENCE).values(**values), _fence_of(job))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def bury(session: AsyncSession, job: ClaimedJob, *, now: datetime, error: str) -> bool:
    """Mark dead, keeping ``last_error``.

    The dedupe key is released: it promises one *pending* job per key, and a dead job is
    no longer pending, so a later enqueue of the same key must not be swallowed.
    """
    result = await session.execute(
        update(jobs)
        .where(_FENCE)
        .values(
            status=JobStatus.DEAD,
            last_error=error,
            dedupe_key=None,
            locked_by=None,
            lease_expires_at=None,
            updated_at=now,
        ),
        _fence_of(job),
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def depth_by_status(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(jobs.c.status, func.count()).group_by(jobs.c.status))
    return {status: int(count) for status, count in rows.all()}


async def due_by_organization(session: AsyncSession, now: datetime) -> list[OrganizationBacklog]:
    """Each organisation's queued jobs due at ``now`` and the run_at of its oldest: one
    grouped read of the due jobs (``ix_jobs_queued_organization``), for the metrics."""
    rows = await session.execute(
        select(jobs.c.organization_id, func.count(), func.min(jobs.c.run_at))
        .where(_status_is(JobStatus.QUEUED), jobs.c.run_at <= now)
        .group_by(jobs.c.organization_id)
    )
    return [OrganizationBacklog(org, int(due), oldest) for org, due, oldest in rows.all()]


async def delete_queued(
    session: AsyncSession,
    *,
    kind: str,
    ref: str,
    payload_matches: Mapping[str, Any] | None = None,
) -> None:
    """Remove the still-queued jobs of ``kind`` filed under ``ref`` (``ix_jobs_ref``); a job
    already claimed runs and checks for itself whether it is still wanted.

    ``payload_matches`` narrows to jobs whose payload holds those values: a handful of jobs
    per ref, so they are compared here rather than with engine-specific JSON operators.
    """
    queued = (Job.ref == ref, Job.kind == kind, Job.status == JobStatus.QUEUED)
    if not payload_matches:
        await session.execute(delete(Job).where(*queued))
        return
    rows = await session.scalars(select(Job).where(*queued))
    ids = [j.id for j in rows if all(j.payload.get(k) == v for k, v in payload_matches.items())]
    if ids:
        await session.execute(delete(Job).where(Job.id.in_(ids)))


async def list_page(
    session: AsyncSession,
    organization_id: int,
    *,
    status: str | None,
    kind: str | None,
    offset: int,
    limit: int,
) -> tuple[Sequence[Job], int]:
    """One organisation's jobs, most recently changed first, and how many match in all."""
    query = select(Job).where(Job.organization_id == organization_id)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(
        query.order_by(Job.updated_at.desc(), Job.id.desc()).offset(offset).limit(limit)
    )
    return rows.all(), int(total or 0)


async def with_key_prefix(
    session: AsyncSession, organization_id: int, kind: str, prefix: str, *, limit: int = 100
) -> Sequence[Job]:
    """One organisation's jobs of ``kind`` whose dedupe key starts with ``prefix`` (the
    jobs of one execution's actions: ``action:<id>:``), oldest first."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = await session.scalars(
        select(Job)
        .where(
            Job.organization_id == organization_id,
            Job.kind == kind,
            Job.dedupe_key.like(escaped + "%", escape="\\"),
        )
        .order_by(Job.created_at, Job.id)
        .limit(limit)
    )
    return rows.all()
