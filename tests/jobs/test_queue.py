from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.jobs.models import JobStatus
from careflow.jobs.queue import add_wake_callback, enqueue, remove_wake_callback
from careflow.kit.clock import FrozenClock
from tests.jobs.conftest import add_job, all_jobs, only_job


class TestWakeUps:
    """The in-process runner is woken once the jobs are visible: at the outermost commit."""

    async def test_a_savepoint_after_the_enqueue_neither_wakes_early_nor_loses_the_wake(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        woken: list[int] = []

        def wake() -> None:
            woken.append(len(woken))

        add_wake_callback(wake)
        try:
            async with sessionmaker() as session, session.begin():
                await enqueue(session, "test.noop", {}, run_at=clock.now(), now=clock.now())
                async with session.begin_nested():  # released: SQLAlchemy's after_commit
                    pass
                assert woken == []
                savepoint = await session.begin_nested()
                await savepoint.rollback()  # and after_rollback, for a savepoint
            assert woken == [0]
            assert len(await all_jobs(sessionmaker)) == 1
        finally:
            remove_wake_callback(wake)

    async def test_a_rolled_back_transaction_wakes_nobody(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        woken: list[bool] = []

        def wake() -> None:
            woken.append(True)

        add_wake_callback(wake)
        try:
            async with sessionmaker() as session:
                await enqueue(session, "test.noop", {}, run_at=clock.now(), now=clock.now())
                await session.rollback()
            assert woken == []
        finally:
            remove_wake_callback(wake)


class TestEnqueue:
    async def test_job_exists_only_if_the_transaction_commits(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        async with sessionmaker() as session:
            await enqueue(session, "test.noop", {"n": 1}, run_at=clock.now(), now=clock.now())
            await session.rollback()
        assert await all_jobs(sessionmaker) == []

        await add_job(sessionmaker, clock, "test.noop", {"n": 2}, organization_id=7)
        job = await only_job(sessionmaker)
        assert (job.kind, job.payload, job.organization_id) == ("test.noop", {"n": 2}, 7)
        assert (job.status, job.attempts, job.run_at) == (JobStatus.QUEUED, 0, clock.now())

    async def test_dedupe_key_makes_a_second_enqueue_a_no_op(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        await add_job(sessionmaker, clock, "test.noop", {"first": True}, dedupe_key="k1")
        later = clock.now() + timedelta(hours=1)
        await add_job(
            sessionmaker, clock, "test.noop", {"first": False}, dedupe_key="k1", run_at=later
        )
        await add_job(sessionmaker, clock, "test.noop", {}, dedupe_key="k2")

        jobs = await all_jobs(sessionmaker)
        assert [(j.dedupe_key, j.payload) for j in jobs] == [("k1", {"first": True}), ("k2", {})]
