"""Jobs as rows, for the console's jobs tests: a dead job, or one retrying after a failure."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.jobs.models import Job

ERROR = "RetryableJobError: SMTP connection timeout"


async def add_job(
    engine: AsyncEngine,
    now: datetime,
    *,
    org: int = 1,
    status: str = "dead",
    kind: str = "noop",
    attempts: int = 5,
    error: str | None = ERROR,
    run_at: datetime | None = None,
) -> int:
    async with create_sessionmaker(engine)() as session, session.begin():
        job = Job(
            kind=kind,
            payload={"execution_id": 7},
            organization_id=org,
            status=status,
            run_at=run_at or now,
            attempts=attempts,
            max_attempts=5,
            last_error=error,
            created_at=now - timedelta(minutes=30),
            updated_at=now,
        )
        session.add(job)
        await session.flush()
        return job.id


async def jobs_of(engine: AsyncEngine) -> dict[int, tuple[str, int]]:
    async with create_sessionmaker(engine)() as session:
        return {j.id: (j.status, j.attempts) for j in await session.scalars(select(Job))}
