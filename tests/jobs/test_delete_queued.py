"""``store.delete_queued``: how other domains remove their jobs (scheduling drops its fires)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.jobs import store
from careflow.jobs.models import Job, JobStatus
from careflow.kit.clock import FrozenClock
from tests.jobs.conftest import add_job, all_jobs

REF = "appointment:1:apt-a"
OTHER_REF = "appointment:1:apt-b"


async def _fires(
    sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock
) -> None:
    for rule_id, ref in ((1, REF), (2, REF), (1, OTHER_REF)):
        await add_job(sessionmaker, clock, "test.fire", {"rule_id": rule_id}, ref=ref)
    await add_job(sessionmaker, clock, "test.other", {"rule_id": 1}, ref=REF)


def _left(jobs: list[Job]) -> list[tuple[str, str | None, int]]:
    return sorted((j.kind, j.ref, j.payload["rule_id"]) for j in jobs)


class TestDeleteQueued:
    async def test_removes_the_queued_jobs_of_that_kind_and_ref_only(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        await _fires(sessionmaker, clock)
        async with sessionmaker() as session, session.begin():
            await store.delete_queued(session, kind="test.fire", ref=REF)
        assert _left(await all_jobs(sessionmaker)) == [
            ("test.fire", OTHER_REF, 1),
            ("test.other", REF, 1),
        ]

    async def test_payload_matches_narrows_to_those_values(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        await _fires(sessionmaker, clock)
        async with sessionmaker() as session, session.begin():
            await store.delete_queued(
                session, kind="test.fire", ref=REF, payload_matches={"rule_id": 2}
            )
        assert _left(await all_jobs(sessionmaker)) == [
            ("test.fire", REF, 1),
            ("test.fire", OTHER_REF, 1),
            ("test.other", REF, 1),
        ]

    async def test_a_claimed_job_stays_to_check_for_itself(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        await add_job(sessionmaker, clock, "test.fire", {"rule_id": 1}, ref=REF)
        async with sessionmaker() as session, session.begin():
            await session.execute(update(Job).values(status=JobStatus.RUNNING))
        async with sessionmaker() as session, session.begin():
            await store.delete_queued(session, kind="test.fire", ref=REF)
            await store.delete_queued(
                session, kind="test.fire", ref=REF, payload_matches={"rule_id": 1}
            )
        [job] = await all_jobs(sessionmaker)
        assert job.status == JobStatus.RUNNING

    async def test_nothing_is_removed_unless_the_transaction_commits(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        await add_job(sessionmaker, clock, "test.fire", {"rule_id": 1}, ref=REF)
        async with sessionmaker() as session:
            await store.delete_queued(session, kind="test.fire", ref=REF)
            await session.rollback()
        assert len(await all_jobs(sessionmaker)) == 1
