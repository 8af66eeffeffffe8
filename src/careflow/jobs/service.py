"""What the HTTP edge asks of the queue: an organisation's jobs, and the depth by status.

Reads only; never commits. Payloads hold ids (event, execution, rule, appointment), never
patient data, so a job is shown as stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.jobs import store
from careflow.jobs.models import Job
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


async def depth_by_status(session: AsyncSession) -> dict[str, int]:
    """How many jobs of every organisation are queued, running and dead (for metrics)."""
    return await store.depth_by_status(session)


async def jobs_with_key_prefix(
    session: AsyncSession, principal: Principal, kind: str, prefix: str
) -> Sequence[Job]:
    """The caller's organisation's jobs of ``kind`` whose dedupe key starts with ``prefix``
    (still queued, running, or dead: a finished job is deleted)."""
    return await store.with_key_prefix(session, principal.org_id, kind, prefix)
