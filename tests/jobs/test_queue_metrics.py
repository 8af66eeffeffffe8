"""The per-organisation queue gauges: the top organisations by due jobs, one ``other``."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.jobs.queue import enqueue_many
from careflow.jobs.service import sample_queue
from careflow.kit.clock import FrozenClock
from careflow.kit.metrics import REGISTRY
from tests.jobs.conftest import add_job

Maker = async_sessionmaker[AsyncSession]


def due(org: str) -> float | None:
    return REGISTRY.get_sample_value("careflow_queue_due_jobs", {"organization": org})


def oldest(org: str) -> float | None:
    return REGISTRY.get_sample_value("careflow_queue_oldest_due_seconds", {"organization": org})


async def backlog(sessionmaker: Maker, clock: FrozenClock, org: int | None, n: int) -> None:
    async with sessionmaker() as session, session.begin():
        await enqueue_many(
            session,
            "test.metrics",
            [({}, org, None) for _ in range(n)],
            run_at=clock.now(),
            now=clock.now(),
        )


async def sample(sessionmaker: Maker, clock: FrozenClock, top: int) -> None:
    async with sessionmaker() as session:
        await sample_queue(session, clock.now(), top=top)


class TestOrganisationGauges:
    async def test_the_top_organisations_by_due_jobs_and_one_other_series(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        # Organisation n has n due jobs, queued n minutes before the sample.
        for org in range(1, 6):
            clock.advance(timedelta(minutes=-org))
            await backlog(sessionmaker, clock, org, org)
            clock.advance(timedelta(minutes=org))
        await add_job(
            sessionmaker,
            clock,
            "test.future",
            organization_id=1,
            run_at=clock.now() + timedelta(hours=1),
        )

        await sample(sessionmaker, clock, top=3)

        assert [due(str(org)) for org in (5, 4, 3)] == [5.0, 4.0, 3.0]
        assert [oldest(str(org)) for org in (5, 4, 3)] == [300.0, 240.0, 180.0]
        assert due("2") is None and due("1") is None  # no series of their own
        assert due("other") == 3.0  # 2 + 1; the job not yet due is not counted
        assert oldest("other") == 120.0
        series = [
            s for m in REGISTRY.collect() if m.name == "careflow_queue_due_jobs" for s in m.samples
        ]
        assert len(series) == 4

    async def test_an_organisation_that_leaves_the_top_loses_its_series(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        await backlog(sessionmaker, clock, 1, 2)
        await sample(sessionmaker, clock, top=1)
        assert due("1") == 2.0
        await backlog(sessionmaker, clock, 2, 5)
        await backlog(sessionmaker, clock, None, 1)

        await sample(sessionmaker, clock, top=1)

        assert due("1") is None
        assert due("2") == 5.0
        assert due("other") == 3.0  # organisation 1's two and the job of no organisation
        assert oldest("other") == 0.0

    async def test_jobs_of_no_organisation_are_shown_as_none(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        await backlog(sessionmaker, clock, None, 4)
        clock.advance(timedelta(seconds=30))

        await sample(sessionmaker, clock, top=10)

        assert due("none") == 4.0
        assert oldest("none") == 30.0
        assert due("other") == 0.0
