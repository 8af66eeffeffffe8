"""Writes held to a batch's end (``jobs.held_writes``): sent once per statement, in order,
and given back by a job that fails, unless it also wrote at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow import db
from careflow.jobs import held_writes
from careflow.jobs.models import JobStatus
from careflow.jobs.registry import JobContext, Sharing, job_handler
from careflow.kit.clock import FrozenClock
from tests.jobs.conftest import MakeWorker, add_job, all_jobs, effects

pytestmark = pytest.mark.usefixtures("effects_table")

Maker = async_sessionmaker[AsyncSession]

_INSERT = text("INSERT INTO test_job_effects (job_id, label, attempt) VALUES (:j, :l, :a)")
_RELABEL = text("UPDATE test_job_effects SET label = :l WHERE job_id = :j")


@job_handler("test.held", sharing=Sharing.EFFECTS)
async def held(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Hold a row's INSERT; then fail, or write at once and fail, as the payload says."""
    if payload.get("flush_first"):
        await held_writes.flush(ctx.session)  # what the jobs before it held (an SMS count)
    values = {"j": ctx.job_id, "l": "held", "a": ctx.attempt}
    await db.write(ctx.session, "effects.insert", _INSERT, values)
    if payload.get("write_now") and ctx.attempt == 1:
        connection = await ctx.session.connection()
        await connection.execute(_INSERT, {"j": ctx.job_id, "l": "now", "a": ctx.attempt})
    if payload.get("bad_statement") and ctx.attempt == 1:
        await ctx.session.execute(text("SELECT no_such_column FROM test_job_effects"))
    if payload.get("bad_statement_caught") and ctx.attempt == 1:
        try:
            await ctx.session.execute(text("SELECT no_such_column FROM test_job_effects"))
        except Exception as exc:
            raise RuntimeError("a failed read, reported as something else") from exc
    if payload.get("fail") and ctx.attempt == 1:
        raise RuntimeError("this job fails")


@contextmanager
def _sent(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """Each statement the engine sends while the block runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def listener(_c: Any, _cu: Any, statement: str, params: Any, _x: Any, _m: bool) -> None:
        seen.append((statement, params))

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)


def _count_inserts(engine: AsyncEngine) -> tuple[list[bool], Any]:
    """The INSERTs into test_job_effects engine-wide, each as whether it was an executemany."""
    seen: list[bool] = []

    def listener(_c: Any, _cu: Any, statement: str, _p: Any, _x: Any, many: bool) -> None:
        if statement.startswith("INSERT INTO test_job_effects"):
            seen.append(many)

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    return seen, listener


async def test_held_writes_go_as_one_statement_for_the_batch(
    make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, engine: AsyncEngine
) -> None:
    for _ in range(4):
        await add_job(sessionmaker, clock, "test.held")
    worker = make_worker(services={})
    seen, listener = _count_inserts(engine)
    try:
        assert await worker.run_batch(await worker.claim(4)) == ["done"] * 4
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)

    assert seen == [True]  # one executemany for the four rows
    assert [(j, label) for j, label, _ in await effects(engine)] == [
        (i, "held") for i in range(1, 5)
    ]
    assert await all_jobs(sessionmaker) == []


@pytest.mark.parametrize("payload", [{"fail": True}, {"fail": True, "flush_first": True}])
async def test_a_failing_job_gives_back_what_it_held_and_the_others_commit(
    make_worker: MakeWorker,
    sessionmaker: Maker,
    clock: FrozenClock,
    engine: AsyncEngine,
    payload: dict[str, Any],
) -> None:
    # Sending what earlier jobs held, before its own writes, is not a write of its own.
    await add_job(sessionmaker, clock, "test.held")
    await add_job(sessionmaker, clock, "test.held", payload)
    await add_job(sessionmaker, clock, "test.held")
    worker = make_worker(services={})

    assert await worker.run_batch(await worker.claim(3)) == ["done", "retried", "done"]

    assert [j for j, _, _ in await effects(engine)] == [1, 3]
    [job] = await all_jobs(sessionmaker)
    assert (job.id, job.status, job.attempts) == (2, JobStatus.QUEUED, 1)
    assert job.last_error is not None and "RuntimeError" in job.last_error


@pytest.mark.parametrize("failure", ["write_now", "bad_statement", "bad_statement_caught"])
async def test_a_job_that_fails_after_writing_at_once_fails_the_batch_and_nothing_is_kept(
    make_worker: MakeWorker,
    sessionmaker: Maker,
    clock: FrozenClock,
    engine: AsyncEngine,
    failure: str,
) -> None:
    await add_job(sessionmaker, clock, "test.held")
    await add_job(sessionmaker, clock, "test.held", {failure: True, "fail": True})
    await add_job(sessionmaker, clock, "test.held")
    worker = make_worker(services={})

    # Its INSERT at once (or its failed statement) has no savepoint to roll back to: the
    # whole transaction goes, and each job that ran in it is retried later, not rerun at
    # once. The job after it had not run yet, and runs in a transaction of its own.
    assert await worker.run_batch(await worker.claim(3)) == ["retried", "retried", "done"]
    assert [(j, label, a) for j, label, a in await effects(engine)] == [(3, "held", 1)]
    jobs = await all_jobs(sessionmaker)
    assert [(j.id, j.status, j.attempts) for j in jobs] == [
        (1, JobStatus.QUEUED, 1),
        (2, JobStatus.QUEUED, 1),
    ]
    assert all("FailureNotIsolated" in (j.last_error or "") for j in jobs)

    clock.advance(minutes=10)  # past the backoff; second attempts run alone and succeed
    assert await worker.run_until_idle() == 2
    assert sorted((j, label, a) for j, label, a in await effects(engine)) == [
        (1, "held", 2),
        (2, "held", 2),
        (3, "held", 1),
    ]


async def test_a_row_written_by_a_second_statement_flushes_the_first(
    sessionmaker: Maker, engine: AsyncEngine
) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        row = ("test_job_effects", 1)
        await db.write(session, "a", _INSERT, {"j": 1, "l": "first", "a": 1}, row=row)
        await db.write(session, "b", _INSERT, {"j": 2, "l": "other", "a": 1})
        assert len(writes) == 2
        # The UPDATE of row 1 is another statement: what is held goes first, so it finds it.
        await db.write(session, "c", _RELABEL, {"j": 1, "l": "second"}, row=row)
        assert len(writes) == 1
        await writes.flush(session)

    assert [(j, label) for j, label, _ in await effects(engine)] == [(1, "second"), (2, "other")]


async def test_discarded_writes_are_not_sent(sessionmaker: Maker, engine: AsyncEngine) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        await db.write(session, "a", _INSERT, {"j": 1, "l": "kept", "a": 1}, row=1)
        mark = writes.mark()
        await db.write(session, "a", _INSERT, {"j": 2, "l": "gone", "a": 1}, row=2)
        await db.write(session, "c", _RELABEL, {"j": 1, "l": "gone"}, row=3)
        writes.discard_since(mark)
        assert len(writes) == 1
        await writes.flush(session)

    assert [(j, label) for j, label, _ in await effects(engine)] == [(1, "kept")]


async def test_writes_already_sent_cannot_be_discarded(sessionmaker: Maker) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        mark = writes.mark()
        await db.write(session, "a", _INSERT, {"j": 1, "l": "sent", "a": 1}, row=1)
        await db.write(session, "c", _RELABEL, {"j": 1, "l": "again"}, row=1)
        with pytest.raises(RuntimeError, match="already sent"):
            writes.discard_since(mark)
        await session.rollback()


async def test_without_held_writes_a_write_runs_at_once(
    sessionmaker: Maker, engine: AsyncEngine
) -> None:
    async with sessionmaker() as session, session.begin():
        await db.write(session, "a", _INSERT, {"j": 1, "l": "now", "a": 1})
        result = await session.execute(text("SELECT count(*) FROM test_job_effects"))
        assert result.scalar_one() == 1


async def test_a_change_to_a_held_insert_is_made_in_its_values(
    sessionmaker: Maker, engine: AsyncEngine
) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        row = ("test_job_effects", 1)
        await db.write(session, "a", _INSERT, {"j": 1, "l": "first", "a": 1}, row=row)
        assert writes.amend(row, "a", {"l": "amended"})
        # Only the write that holds the row, under its own key, is amended.
        assert not writes.amend(row, "b", {"l": "wrong key"})
        assert not writes.amend(("test_job_effects", 2), "a", {"l": "no such row"})
        assert len(writes) == 1
        await writes.flush(session)
        # Sent: nothing held is left to amend.
        assert not writes.amend(row, "a", {"l": "too late"})

    assert [(j, label) for j, label, _ in await effects(engine)] == [(1, "amended")]


async def test_a_discarded_insert_cannot_be_amended(sessionmaker: Maker) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        mark = writes.mark()
        await db.write(session, "a", _INSERT, {"j": 1, "l": "gone", "a": 1}, row=1)
        writes.discard_since(mark)
        assert not writes.amend(1, "a", {"l": "amended"})
        await session.rollback()


async def test_ids_are_drawn_ahead_a_block_of_each_wanted_table_in_one_statement(
    sessionmaker: Maker, engine: AsyncEngine
) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        if held_writes.draws_ids(session) is None:
            assert engine.dialect.name == "sqlite"  # no sequences: inserts return their ids
            await session.rollback()
            return
        with _sent(engine) as sent:

            def draws() -> int:
                return sum("nextval" in statement for statement, _ in sent)

            writes.want_ids(("executions", "forms"), 3)
            executions = [await writes.take_id(session, "executions") for _ in range(3)]
            forms = [await writes.take_id(session, "forms") for _ in range(3)]
            assert draws() == 1  # both blocks at the first take
            extra = await writes.take_id(session, "executions")  # the block ran out
            assert draws() == 2
        assert executions == sorted(executions) and len(set(executions)) == 3
        assert extra > max(executions)
        assert len(set(forms)) == 3
        assert all(writes.is_fresh("executions", i) for i in [*executions, extra])
        assert not writes.is_fresh("executions", max(executions) + 10_000)
        await session.rollback()


def test_only_careflow_table_names_go_into_the_draw() -> None:
    with pytest.raises(ValueError, match="not a table name"):
        held_writes.HeldWrites().want_ids(["x'); DROP TABLE jobs; --"], 1)


async def test_inserts_other_writes_point_at_are_sent_first(
    sessionmaker: Maker, engine: AsyncEngine
) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        # A child held before its parent (an earlier event's link, a later event's episode).
        await db.write(session, "child", _RELABEL, {"j": 1, "l": "child"}, row=1)
        await writes.add(session, "parent", _INSERT, {"j": 1, "l": "p", "a": 1}, 2, parent=True)
        with _sent(engine) as seen:
            await writes.flush(session)

    sent = [s for s, _ in seen if s.startswith(("INSERT", "UPDATE"))]
    assert [s.split()[0] for s in sent] == ["INSERT", "UPDATE"], sent
    assert [(j, label) for j, label, _ in await effects(engine)] == [(1, "child")]


class _FlushThenFail:
    """An action that sends what the batch holds (as an SMS count does), then fails."""

    async def execute(self, ctx: Any) -> Any:
        await held_writes.flush(ctx.session)
        raise RuntimeError("after the flush")


class _HoldThenFail:
    """An action that holds a write of its own, then fails."""

    async def execute(self, ctx: Any) -> Any:
        await db.write(ctx.session, "a", _INSERT, {"j": 9, "l": "mine", "a": 1})
        raise RuntimeError("after holding")


def _ctx(session: AsyncSession, settings: Any, clock: FrozenClock) -> Any:
    from careflow.actions.base import ActionContext

    return ActionContext(
        session=session,
        settings=settings,
        clock=clock,
        services={},
        organization_id=1,
        execution_id=1,
        action_index=0,
        config={},
        patient_id=None,
        context={},
    )


async def test_a_step_that_flushed_in_its_savepoint_and_failed_fails_its_batch(
    sessionmaker: Maker, engine: AsyncEngine, settings: Any, clock: FrozenClock
) -> None:
    from careflow.executions.runner import SentInSavepoint, _in_savepoint

    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        await db.write(session, "a", _INSERT, {"j": 1, "l": "earlier", "a": 1})
        # Its savepoint's rollback took the earlier job's row with it: the batch must not
        # commit as if that row were written.
        with pytest.raises(SentInSavepoint):
            await _in_savepoint(_ctx(session, settings, clock), _FlushThenFail())
        assert writes.sent == 1
        await session.rollback()
    assert await effects(engine) == []


async def test_a_step_that_failed_in_its_savepoint_gives_back_what_it_held(
    sessionmaker: Maker, engine: AsyncEngine, settings: Any, clock: FrozenClock
) -> None:
    from careflow.executions.runner import _in_savepoint

    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        await db.write(session, "a", _INSERT, {"j": 1, "l": "earlier", "a": 1})
        with pytest.raises(RuntimeError, match="after holding"):
            await _in_savepoint(_ctx(session, settings, clock), _HoldThenFail())
        assert len(writes) == 1  # the earlier job's write stays; the failed step's went
        await writes.flush(session)
    assert [(j, label) for j, label, _ in await effects(engine)] == [(1, "earlier")]


async def test_parents_go_by_rank_whichever_was_held_first(
    sessionmaker: Maker, engine: AsyncEngine
) -> None:
    async with sessionmaker() as session, session.begin():
        writes = held_writes.install(session)
        # A form-like row (rank 2) held before its execution-like parent (rank 1).
        await writes.add(session, "second", _INSERT, {"j": 2, "l": "r2", "a": 1}, 2, parent=2)
        await writes.add(session, "first", _INSERT, {"j": 1, "l": "r1", "a": 1}, 1, parent=1)
        with _sent(engine) as seen:
            await writes.flush(session)
    sent = [params for statement, params in seen if statement.startswith("INSERT")]
    assert len(sent) == 2 and "r1" in str(sent[0]) and "r2" in str(sent[1]), sent
