"""A read through a batch's session sees the writes the batch holds, with no flush by the
caller: the session sends what it holds first, by itself, and only when the statement
needs it (``jobs.held_writes``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    Table,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy import Text as TextType
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow import db
from careflow.jobs import held_writes
from careflow.jobs.models import Job
from careflow.jobs.registry import JobContext, Sharing, job_handler
from careflow.kit.clock import FrozenClock
from tests.jobs.conftest import MakeWorker, add_job, all_jobs, effects

pytestmark = pytest.mark.usefixtures("effects_table")

Maker = async_sessionmaker[AsyncSession]

_effects = Table(
    "test_job_effects",
    MetaData(),
    Column("job_id", BigInteger, nullable=False),
    Column("label", TextType, nullable=False),
    Column("attempt", Integer, nullable=False),
)
_INSERT = insert(_effects)
_COUNT = select(func.count()).select_from(_effects)

# What each job of the batch below counted, in the order they ran, and whether its write
# was held (it ran in a batch).
_counted: list[int] = []
_held: list[bool] = []


@job_handler("test.held_then_read", sharing=Sharing.ROWS)
async def held_then_read(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Hold a row, then count the rows: plain data access, no flush anywhere."""
    values = {"job_id": ctx.job_id, "label": "held", "attempt": ctx.attempt}
    _held.append(db.defers_writes(ctx.session))
    await db.write(ctx.session, "effects.insert", _INSERT, values)
    _counted.append(int(await ctx.session.scalar(_COUNT) or 0))


@contextmanager
def _sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """The text of each statement the engine sends while the block runs."""
    seen: list[str] = []

    def listener(_c: Any, _cu: Any, statement: str, _p: Any, _x: Any, _m: bool) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)


async def test_a_read_in_a_worker_batch_sees_the_writes_held_before_it(
    make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, engine: AsyncEngine
) -> None:
    _counted.clear()
    _held.clear()
    for _ in range(3):
        await add_job(sessionmaker, clock, "test.held_then_read")
    worker = make_worker(services={})

    assert await worker.run_batch(await worker.claim(3)) == ["done"] * 3

    # Each job saw its own held row and those of the jobs before it, in one transaction.
    assert _held == [True, True, True]
    assert _counted == [1, 2, 3]
    assert [(j, label) for j, label, _ in await effects(engine)] == [
        (1, "held"),
        (2, "held"),
        (3, "held"),
    ]
    assert await all_jobs(sessionmaker) == []


async def test_a_read_sees_a_held_write_however_it_is_run(
    sessionmaker: Maker, engine: AsyncEngine
) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        await db.write(session, "a", _INSERT, {"job_id": 1, "label": "a", "attempt": 1})
        assert len(writes) == 1
        assert await session.scalar(_COUNT) == 1  # through the session
        await db.write(session, "a", _INSERT, {"job_id": 2, "label": "b", "attempt": 1})
        connection = await session.connection()
        assert (await connection.execute(_COUNT)).scalar() == 2  # Core, on its connection
        await db.write(session, "a", _INSERT, {"job_id": 3, "label": "c", "attempt": 1})
        # Text it cannot read the tables of: what is held goes first, to be safe.
        assert await session.scalar(text("SELECT count(*) FROM test_job_effects")) == 3
        assert len(writes) == 0 and writes.sent == 3
        await session.rollback()


async def test_a_read_of_other_tables_leaves_the_held_writes_held(
    sessionmaker: Maker, engine: AsyncEngine
) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        for job_id in (1, 2):
            values = {"job_id": job_id, "label": "held", "attempt": 1}
            await db.write(session, "a", _INSERT, values)
        with _sent(engine) as sent:
            assert await session.scalar(select(func.count()).select_from(Job)) == 0
            assert len(writes) == 2  # still held: the jobs table has nothing of theirs
            assert await session.scalar(_COUNT) == 2
        inserts = [s for s in sent if s.startswith("INSERT INTO test_job_effects")]
        assert len(inserts) == 1  # both rows in one executemany, sent before the count
        assert sent.index(inserts[0]) < len(sent) - 1
        await session.rollback()


async def test_an_update_of_a_held_row_runs_after_it(
    sessionmaker: Maker, engine: AsyncEngine
) -> None:
    async with sessionmaker() as session, session.begin():
        held_writes.install(session)
        await db.write(session, "a", _INSERT, {"job_id": 1, "label": "held", "attempt": 1})
        connection = await session.connection()
        relabel = update(_effects).where(_effects.c.job_id == 1).values(label="changed")
        assert (await connection.execute(relabel)).rowcount == 1
    assert await effects(engine) == [(1, "changed", 1)]


async def test_held_writes_are_installed_before_the_first_statement(sessionmaker: Maker) -> None:
    async with sessionmaker() as session, session.begin():
        await session.scalar(_COUNT)
        with pytest.raises(RuntimeError, match="before the session's first statement"):
            held_writes.install(session)
