"""Group commit: concurrent POST /v1/events share transactions; none waits on another's error."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.entities.models import Entity
from careflow.events import service
from careflow.events.batcher import IngestBatcher
from careflow.events.models import Event
from careflow.events.schemas import EventIn
from careflow.jobs.models import Job
from careflow.kit.clock import FrozenClock

Auth = Callable[..., dict[str, str]]


def onboarded(i: int) -> dict[str, Any]:
    return {
        "event_id": f"evt-{i}",
        "type": "patient.onboarded",
        "data": {"patient": {"id": 1000 + i, "first_name": "P"}},
    }


async def count(engine: AsyncEngine, model: Any) -> int:
    async with create_sessionmaker(engine)() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


class TestGroupCommit:
    async def test_concurrent_requests_share_commits_and_all_land(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        commits: list[int] = []
        listener = lambda conn: commits.append(1)  # noqa: E731
        event.listen(engine.sync_engine, "commit", listener)
        try:
            answers = await asyncio.gather(
                *(
                    client.post("/v1/events", json=onboarded(i), headers=auth("service"))
                    for i in range(40)
                )
            )
        finally:
            event.remove(engine.sync_engine, "commit", listener)
        assert [a.status_code for a in answers] == [202] * 40
        assert len({a.json()["data"]["id"] for a in answers}) == 40
        assert await count(engine, Event) == 40
        assert await count(engine, Entity) == 40
        assert await count(engine, Job) == 40
        # Fewer transactions than requests: requests in flight together were written together.
        assert len(commits) < 40

    async def test_duplicates_inside_one_batch_answer_200_and_store_one(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        answers = await asyncio.gather(
            *(
                client.post("/v1/events", json=onboarded(7), headers=auth("service"))
                for _ in range(10)
            )
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] * 9 + [202]
        assert len({a.json()["data"]["id"] for a in answers}) == 1
        assert await count(engine, Event) == 1
        assert await count(engine, Job) == 1

    async def test_one_bad_event_does_not_fail_its_batch(
        self, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        batcher = IngestBatcher(create_sessionmaker(engine), clock)
        good = [EventIn.model_validate(onboarded(i)) for i in range(5)]
        # Built around the model's validation, as only a bug could: data that cannot be
        # stored fails its write, and the batch must survive it.
        bad = EventIn.model_construct(
            event_id="evt-bad",
            type="patient.onboarded",
            occurred_at=None,
            data={"patient": {"id": 9, "tags": {"not", "json"}}},
        )
        results = await asyncio.gather(
            *(batcher.ingest(1, body) for body in [*good[:2], bad, *good[2:]]),
            return_exceptions=True,
        )
        assert isinstance(results[2], StatementError)
        assert [r.created for i, r in enumerate(results) if i != 2] == [True] * 5  # type: ignore[union-attr]
        assert await count(engine, Event) == 5

    async def test_organisations_in_one_batch_each_get_their_own_event_ids(
        self, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        """Rows are inserted in (organisation, event_id) order, not the order given: an
        anonymous event of organisation 2 given before organisation 1's must not be answered
        with organisation 1's new id."""

        def anonymous(patient: int) -> EventIn:
            return EventIn.model_validate(
                {"type": "patient.onboarded", "data": {"patient": {"id": patient}}}
            )

        items = [
            (3, anonymous(301)),
            (2, anonymous(201)),
            (1, anonymous(101)),
            (2, anonymous(202)),
            (1, body_with_id := EventIn.model_validate(onboarded(7))),
            (3, anonymous(302)),
        ]
        assert body_with_id.event_id == "evt-7"
        maker = create_sessionmaker(engine)
        async with maker() as session:
            results = await service.ingest_events(session, items, now=clock.now())
            await session.commit()
        assert len({r.event.id for r in results}) == len(items)
        async with maker() as session:
            for (org, item), result in zip(items, results, strict=True):
                row = await session.get(Event, result.event.id)
                assert row is not None
                assert (row.organization_id, row.data) == (org, item.data)

    async def test_a_reused_event_id_in_one_batch_conflicts_alone(
        self, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        """The first of two events with one event_id is written; the second is a replay when
        it is the same event and a conflict when it is not, and the batch's other events are
        written either way."""
        first = EventIn.model_validate(onboarded(1))
        changed = onboarded(1)
        changed["data"]["patient"]["first_name"] = "Q"
        items = [
            (1, first),
            (1, EventIn.model_validate(onboarded(2))),
            (1, EventIn.model_validate(onboarded(1))),
            (1, EventIn.model_validate(changed)),
        ]
        async with create_sessionmaker(engine)() as session:
            results = await service.ingest_events(session, items, now=clock.now())
            await session.commit()
        assert [(r.created, r.conflict) for r in results] == [
            (True, False),
            (True, False),
            (False, False),
            (False, True),
        ]
        assert results[2].event.id == results[3].event.id == results[0].event.id
        assert results[2].answer() is results[2]
        with pytest.raises(Exception) as raised:
            results[3].answer()
        assert getattr(raised.value, "code", None) == "event_id_conflict"
        assert await count(engine, Event) == 2

    async def test_a_conflict_over_http_leaves_its_neighbours_alone(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        changed = onboarded(1)
        changed["type"] = "patient.updated"
        r = await client.post("/v1/events", json=onboarded(1), headers=auth("service"))
        assert r.status_code == 202, r.text
        sent = [changed, onboarded(2), onboarded(1), onboarded(3)]
        answers = await asyncio.gather(
            *(client.post("/v1/events", json=body, headers=auth("service")) for body in sent)
        )
        assert [a.status_code for a in answers] == [409, 202, 200, 202]
        assert answers[0].json()["error"]["code"] == "event_id_conflict"
        assert await count(engine, Event) == 3

    async def test_concurrent_anonymous_events_of_two_organisations_over_http(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        def post(org: int, patient: int) -> Any:
            body = {"type": "patient.onboarded", "data": {"patient": {"id": patient}}}
            return client.post("/v1/events", json=body, headers=auth("service", org=org))

        sent = [(2 if i % 3 else 1, 5000 + i) for i in range(30)]
        answers = await asyncio.gather(*(post(org, patient) for org, patient in sent))
        ids = []
        for (org, _), answer in zip(sent, answers, strict=True):
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["data"]["id"])
            r = await client.get(f"/v1/events/{ids[-1]}", headers=auth("service", org=org))
            assert r.status_code == 200, (org, r.text)
        async with create_sessionmaker(engine)() as session:
            for (org, patient), event_id in zip(sent, ids, strict=True):
                row = await session.get(Event, event_id)
                assert row is not None
                assert (row.organization_id, row.data["patient"]["id"]) == (org, patient)

    async def test_a_client_that_goes_away_does_not_lose_the_event(
        self, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        batcher = IngestBatcher(create_sessionmaker(engine), clock)
        waiting = asyncio.create_task(batcher.ingest(1, EventIn.model_validate(onboarded(1))))
        await asyncio.sleep(0)  # queued, not yet written
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await batcher.wait_idle()
        assert await count(engine, Event) == 1

    async def test_one_statement_stores_a_batch_and_each_answer_is_its_own_event(
        self, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        maker = create_sessionmaker(engine)
        async with maker() as session:
            [stored] = await service.ingest_events(
                session, [(1, EventIn.model_validate(onboarded(1)))], now=clock.now()
            )
            await session.commit()

        def body(event_id: str | None, patient: int) -> EventIn:
            return EventIn.model_validate(
                {
                    "event_id": event_id,
                    "type": "patient.onboarded",
                    "data": {"patient": {"id": patient}},
                }
            )

        items = [
            (1, body(None, 501)),
            (1, body("evt-x", 502)),
            (1, body(None, 503)),
            (1, body("evt-x", 504)),  # a repeat inside the batch
            (1, body("evt-1", 505)),  # stored before
            (2, body("evt-1", 506)),  # the same event_id in another organisation is new
        ]
        async with maker() as session:
            results = await service.ingest_events(session, items, now=clock.now())
            await session.commit()

        assert [r.created for r in results] == [True, True, True, False, False, True]
        assert results[3].event.id == results[1].event.id
        assert results[4].event.id == stored.event.id
        async with maker() as session:
            for (org, item), result in zip(items, results, strict=True):
                if result.created:
                    row = await session.get(Event, result.event.id)
                    assert row is not None
                    assert (row.organization_id, row.event_id, row.data) == (
                        org,
                        item.event_id,
                        item.data,
                    )


class TestBatchesInFlight:
    async def test_overflowing_batches_run_side_by_side_and_every_request_lands(
        self, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        # Batches of 5 and up to 3 at once: 23 requests queue faster than one task writes.
        batcher = IngestBatcher(create_sessionmaker(engine), clock, max_batch=5, in_flight=3)
        results = await asyncio.gather(
            *(batcher.ingest(1, EventIn.model_validate(onboarded(i))) for i in range(23))
        )
        assert [r.created for r in results] == [True] * 23
        assert len({r.event.id for r in results}) == 23
        await batcher.wait_idle()
        assert await count(engine, Event) == 23
        assert await count(engine, Job) == 23

    async def test_a_lone_request_is_written_by_one_task(
        self, engine: AsyncEngine, clock: FrozenClock
    ) -> None:
        commits: list[int] = []
        listener = lambda conn: commits.append(1)  # noqa: E731
        event.listen(engine.sync_engine, "commit", listener)
        batcher = IngestBatcher(create_sessionmaker(engine), clock, max_batch=50, in_flight=4)
        try:
            # Fewer than a whole batch: one task takes them all, in one or two transactions
            # (the first request's alone, the rest together), never one each.
            await asyncio.gather(
                *(batcher.ingest(1, EventIn.model_validate(onboarded(i))) for i in range(20))
            )
        finally:
            event.remove(engine.sync_engine, "commit", listener)
        assert 1 <= len(commits) <= 2
        assert await count(engine, Event) == 20
