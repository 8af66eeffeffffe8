"""Claims are shared across the organisations with due work, urgent jobs first inside each
(``jobs.claim``); one organisation alone still gets whole claims."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.events.service import DISPATCH_KIND
from careflow.executions.service import RUN_ACTION_KIND
from careflow.jobs import claim
from careflow.jobs.queue import enqueue, enqueue_many
from careflow.jobs.registry import Priority
from careflow.jobs.store import ClaimedJob
from careflow.kit.clock import FrozenClock
from careflow.kit.time_triggers import RESCHEDULE_RULE_KIND
from careflow.scheduling.service import FIRE_KIND
from tests.jobs.conftest import MakeWorker, add_job, all_jobs

Maker = async_sessionmaker[AsyncSession]
LEASE = timedelta(seconds=30)


async def flood(sessionmaker: Maker, clock: FrozenClock, org: int | None, n: int) -> None:
    """``n`` jobs of ``org`` due now, in one statement."""
    async with sessionmaker() as session, session.begin():
        await enqueue_many(
            session,
            "test.flood",
            [({"i": i}, org, None) for i in range(n)],
            run_at=clock.now() - timedelta(minutes=5),
            now=clock.now(),
        )


async def claim_once(
    sessionmaker: Maker,
    clock: FrozenClock,
    limit: int,
    rotation: claim.Rotation | None = None,
    worker: str = "w1",
) -> list[ClaimedJob]:
    async with sessionmaker() as session, session.begin():
        return await claim.claim_due(
            session, worker=worker, now=clock.now(), lease=LEASE, limit=limit, rotation=rotation
        )


def orgs_of(jobs: list[ClaimedJob]) -> list[int | None]:
    return [job.organization_id for job in jobs]


class TestAcrossOrganisations:
    async def test_one_job_of_another_organisation_is_in_the_first_claim_of_a_flood(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        await flood(sessionmaker, clock, 1, 1000)
        clock.advance(timedelta(seconds=1))
        await add_job(sessionmaker, clock, "test.b", organization_id=2)

        claimed = await claim_once(sessionmaker, clock, 50)

        assert len(claimed) == 50  # the flood fills what B does not take
        assert orgs_of(claimed).count(2) == 1
        assert orgs_of(claimed).count(1) == 49
        # Dealt in turns: B's job is among the first, so it runs in the claim's first batch.
        assert orgs_of(claimed)[:2] == [1, 2]

    async def test_jobs_of_no_organisation_are_a_group_of_their_own(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        await flood(sessionmaker, clock, 1, 300)
        await add_job(sessionmaker, clock, "test.none")

        claimed = await claim_once(sessionmaker, clock, 10)

        assert orgs_of(claimed).count(None) == 1
        assert orgs_of(claimed).count(1) == 9

    async def test_one_organisation_alone_gets_whole_claims(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        await flood(sessionmaker, clock, 1, 250)

        sizes = [len(await claim_once(sessionmaker, clock, 100)) for _ in range(3)]

        assert sizes == [100, 100, 50]

    async def test_the_claim_is_shared_evenly_while_each_has_enough(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        for org in (1, 2, 3):
            await flood(sessionmaker, clock, org, 100)

        claimed = await claim_once(sessionmaker, clock, 30)

        assert sorted(orgs_of(claimed)) == [1] * 10 + [2] * 10 + [3] * 10

    async def test_a_claim_of_one_serves_each_organisation_in_turn(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        for org in (3, 1, 2):
            await flood(sessionmaker, clock, org, 2)
        await add_job(sessionmaker, clock, "test.none")
        rotation = claim.Rotation()

        order = [orgs_of(await claim_once(sessionmaker, clock, 1, rotation)) for _ in range(7)]

        assert order == [[None], [1], [2], [3], [1], [2], [3]]

    async def test_jobs_not_yet_due_are_neither_claimed_nor_a_turn(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        later = clock.now() + timedelta(hours=1)
        await add_job(sessionmaker, clock, "test.later", organization_id=1, run_at=later)
        await add_job(sessionmaker, clock, "test.now", organization_id=2)

        claimed = await claim_once(sessionmaker, clock, 10)

        assert [job.kind for job in claimed] == ["test.now"]
        async with sessionmaker() as session:
            assert await claim.due_groups(session, clock.now()) == []
            assert await claim.next_run_at(session) == later

    async def test_the_worker_deals_the_claim_across_organisations(
        self, sessionmaker: Maker, clock: FrozenClock, make_worker: MakeWorker
    ) -> None:
        """The worker's own claim (its rotation) gives B's job in the first claim."""
        await flood(sessionmaker, clock, 1, 500)
        await add_job(sessionmaker, clock, "test.b", organization_id=2)
        worker = make_worker(name="fair")

        claimed = await worker.claim(20)

        assert orgs_of(claimed).count(2) == 1
        assert len(claimed) == 20

    async def test_two_claimers_share_both_organisations_without_taking_a_job_twice(
        self, sessionmaker: Maker, clock: FrozenClock, engine: AsyncEngine
    ) -> None:
        if engine.dialect.name != "postgresql":
            pytest.skip("concurrent claims need PostgreSQL (SQLite has one writer)")
        await flood(sessionmaker, clock, 1, 60)
        await flood(sessionmaker, clock, 2, 60)
        async with sessionmaker() as first, first.begin():
            a = await claim.claim_due(first, worker="a", now=clock.now(), lease=LEASE, limit=40)
            # The second claim runs while the first one's rows are still locked.
            async with sessionmaker() as second, second.begin():
                b = await claim.claim_due(
                    second, worker="b", now=clock.now(), lease=LEASE, limit=40
                )
        assert sorted(orgs_of(a)) == [1] * 20 + [2] * 20
        assert not {j.id for j in a} & {j.id for j in b}
        assert sorted(orgs_of(b)) == [1] * 20 + [2] * 20


class TestPriorities:
    async def test_urgent_jobs_go_first_then_normal_then_bulk_each_oldest_first(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        start = clock.now()
        await add_job(sessionmaker, clock, "bulk", organization_id=1, priority=Priority.BULK)
        clock.advance(timedelta(seconds=1))
        await add_job(sessionmaker, clock, "normal-1", organization_id=1)
        clock.advance(timedelta(seconds=1))
        await add_job(sessionmaker, clock, "normal-2", organization_id=1)
        clock.advance(timedelta(seconds=1))
        await add_job(sessionmaker, clock, "urgent", organization_id=1, priority=Priority.URGENT)
        assert clock.now() > start

        first = await claim_once(sessionmaker, clock, 2)
        rest = await claim_once(sessionmaker, clock, 10)

        assert [j.kind for j in first] == ["urgent", "normal-1"]
        assert [j.kind for j in rest] == ["normal-2", "bulk"]
        assert [j.priority for j in first + rest] == [0, 1, 1, 2]

    async def test_priority_orders_inside_an_organisation_not_across(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        """Organisation 1's urgent backlog does not hold up organisation 2's bulk job."""
        async with sessionmaker() as session, session.begin():
            await enqueue_many(
                session,
                "urgent",
                [({}, 1, None) for _ in range(100)],
                run_at=clock.now(),
                now=clock.now(),
                priority=Priority.URGENT,
            )
        await add_job(sessionmaker, clock, "bulk", organization_id=2, priority=Priority.BULK)

        claimed = await claim_once(sessionmaker, clock, 10)

        assert "bulk" in [j.kind for j in claimed]

    async def test_a_higher_level_not_yet_due_does_not_hide_a_lower_one_due(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        later = clock.now() + timedelta(days=1)
        for _ in range(5):
            await add_job(
                sessionmaker,
                clock,
                "fire",
                organization_id=1,
                run_at=later,
                priority=Priority.URGENT,
            )
        await add_job(sessionmaker, clock, "normal", organization_id=1)

        claimed = await claim_once(sessionmaker, clock, 10)

        assert [j.kind for j in claimed] == ["normal"]

    @pytest.mark.parametrize(
        ("kind", "payload", "expected"),
        [
            (FIRE_KIND, {}, Priority.URGENT),
            (DISPATCH_KIND, {"event_id": 1}, Priority.URGENT),
            (RUN_ACTION_KIND, {"type": "require_form"}, Priority.URGENT),
            (RUN_ACTION_KIND, {"type": "send_email"}, Priority.NORMAL),
            (RESCHEDULE_RULE_KIND, {}, Priority.BULK),
            ("test.unregistered", {}, Priority.NORMAL),
        ],
    )
    async def test_each_kind_declares_its_default_priority(
        self,
        sessionmaker: Maker,
        clock: FrozenClock,
        kind: str,
        payload: dict[str, Any],
        expected: Priority,
    ) -> None:
        await add_job(sessionmaker, clock, kind, payload, run_at=clock.now() + timedelta(days=9))
        [job] = await all_jobs(sessionmaker)
        assert job.priority == expected

    async def test_an_enqueuer_may_name_the_priority_but_only_a_known_level(
        self, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        later = clock.now() + timedelta(days=9)
        await add_job(sessionmaker, clock, FIRE_KIND, run_at=later, priority=Priority.BULK)
        [job] = await all_jobs(sessionmaker)
        assert job.priority == Priority.BULK
        async with sessionmaker() as session:
            with pytest.raises(ValueError):
                await enqueue(session, "x", {}, run_at=later, now=clock.now(), priority=7)  # type: ignore[arg-type]
