"""A batch's reads and fences have one SQL text on PostgreSQL whatever the batch's size, so
asyncpg prepares each once (``db.one_of`` / ``db.pairs_of``); elsewhere they are ``IN``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.entities import repository as entities
from careflow.events import repository as events
from careflow.executions import repository as executions
from careflow.jobs import claim, store
from careflow.jobs.store import ClaimedJob
from careflow.kit.clock import FrozenClock
from careflow.messages import repository as messages
from tests.jobs.conftest import add_job

Maker = async_sessionmaker[AsyncSession]


@contextmanager
def _texts(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def listener(_c: Any, _cu: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)


async def _claimed(sessionmaker: Maker, clock: FrozenClock, n: int) -> list[ClaimedJob]:
    for _ in range(n):
        await add_job(sessionmaker, clock, "test.stable")
    async with sessionmaker() as session, session.begin():
        return await claim.claim_due(
            session, worker="w1", now=clock.now(), lease=timedelta(seconds=30), limit=n
        )


async def test_batch_statements_keep_one_text_for_any_size(
    sessionmaker: Maker, engine: AsyncEngine, clock: FrozenClock
) -> None:
    postgresql = engine.dialect.name == "postgresql"
    by_size: dict[int, list[str]] = {}
    for size in (1, 3):
        jobs = await _claimed(sessionmaker, clock, size)
        ids = [job.id for job in jobs]
        with _texts(engine) as texts:
            async with sessionmaker() as session, session.begin():
                assert await store.still_held(session, jobs) == set(ids)
                await executions.get_many_for_run(session, ids)
                await executions.actions_of(session, ids)
                await messages.get_for_actions(session, [(i, 0) for i in ids])
                await events.get_events_by_pk(session, ids)
                await entities.snapshots_data(session, 1, [("patient", i) for i in ids])
                assert await store.complete_many(session, jobs) == size
        by_size[size] = [t for t in texts if not t.startswith(("BEGIN", "COMMIT"))]
    assert len(by_size[1]) == len(by_size[3]) == 7
    if postgresql:
        assert by_size[1] == by_size[3]
        assert all("ANY" in t or "unnest" in t for t in by_size[1]), by_size[1]
    else:
        # An expanding IN: one parameter per item, so the text grows with the batch.
        assert by_size[1] != by_size[3]
