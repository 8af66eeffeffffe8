"""Batches read ahead: dispatches and message steps share a transaction and read each table
once for the whole batch; each email is still sent once."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.events.service import DISPATCH_KIND
from careflow.executions.models import Execution
from careflow.executions.prefetch import StepReads
from careflow.executions.service import RUN_ACTION_KIND
from careflow.jobs.models import Job
from careflow.jobs.queue import enqueue
from careflow.jobs.store import ClaimedJob
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from careflow.messages.models import Message
from careflow.pathways.models import Episode, EpisodeEvent
from tests.fixtures.database import count
from tests.fixtures.factories import E2E_RULE, PATIENT, create_rule, onboarded, post_event
from tests.fixtures.smtp import SmtpServer

Auth = Callable[..., dict[str, str]]
STEPS = 6

RULE = E2E_RULE


def _worker(app: FastAPI, settings: Settings, clock: FrozenClock, name: str) -> Worker:
    return Worker(app.state.sessionmaker, settings, clock, services=app.state.services, name=name)


async def _queued_sends(
    client: httpx.AsyncClient, auth: Auth, worker: Worker, n: int = STEPS
) -> None:
    """``n`` onboarded patients dispatched; their email steps queued, not yet claimed."""
    await create_rule(client, auth, RULE)
    for i in range(n):
        patient = {**PATIENT, "id": 700 + i, "email": f"patient{i}@example.com"}
        await post_event(client, auth, "patient.onboarded", onboarded(patient))
    dispatches = await worker.claim(100)
    assert len(dispatches) == n
    assert await worker.run_batch(dispatches) == ["done"] * n


async def _claim_sends(worker: Worker, n: int = STEPS) -> list[ClaimedJob]:
    sends = await worker.claim(100)
    assert [job.kind for job in sends] == [RUN_ACTION_KIND] * n
    assert {job.payload["type"] for job in sends} == {"send_email"}
    return sends


async def _statuses(engine: AsyncEngine) -> Counter[str]:
    async with create_sessionmaker(engine)() as session:
        return Counter(await session.scalars(select(Execution.status)))


async def test_message_steps_share_one_transaction_and_read_each_table_once(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    worker = _worker(app, settings, clock, "batcher")
    await _queued_sends(client, auth, worker)
    sends = await _claim_sends(worker)
    statements: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        assert await worker.run_batch(sends) == ["done"] * STEPS
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)

    assert len(smtp.sink.messages) == STEPS
    assert len(set(smtp.sink.message_ids())) == STEPS
    assert await _statuses(engine) == Counter({"success": STEPS})
    assert await count(engine, Message, Message.status == "sent") == STEPS
    # Ahead of the steps, once for all six: the leases still held, the executions (locked),
    # their results, the patients' snapshots, the messages already sent, the templates and
    # the patients' own opt-outs; the organisations' rate limits (once per
    # CAREFLOW_RATE_LIMIT_REFRESH_SECONDS for the process: none is set, so no bucket is
    # touched); then the installation's identity, once for the process.
    selects = [s.split(" FROM ")[1].split()[0] for s in statements if s.startswith("SELECT")]
    assert selects == [
        "JOBS",
        "EXECUTIONS",
        "EXECUTION_ACTIONS",
        "ENTITIES",
        "MESSAGES",
        "TEMPLATES",
        "PATIENT_OPT_OUTS",
        "ORGANIZATION_SETTINGS",
        "INSTALLATION",
    ], statements
    # After them, each write once for all six (held by the batch's write-behind), and no
    # savepoint: the messages, the results, the executions finished, the jobs deleted.
    writes = [s for s in statements if not s.startswith(("SELECT", "BEGIN"))]
    assert [" ".join(s.split()[:3]) for s in writes] == [
        "INSERT INTO MESSAGES",
        "INSERT INTO EXECUTION_ACTIONS",
        "UPDATE EXECUTIONS SET",
        "DELETE FROM JOBS",
    ], writes


async def test_a_send_that_fails_in_a_batch_retries_alone_and_the_others_are_not_resent(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    worker = _worker(app, settings, clock, "batcher")
    await _queued_sends(client, auth, worker)
    sends = await _claim_sends(worker)
    smtp.sink.fail_next = 1  # the batch's first email meets a 450

    outcomes = await worker.run_batch(sends)

    assert outcomes == ["retried"] + ["done"] * (STEPS - 1)
    assert len(smtp.sink.messages) == STEPS - 1
    assert await _statuses(engine) == Counter({"success": STEPS - 1, "running": 1})
    # The failed step's savepoint took its RETRYING row with it, as its own transaction would.
    assert await count(engine, Message) == STEPS - 1

    clock.advance(minutes=5)  # past the retry's backoff
    assert await worker.run_until_idle() == 1
    assert len(smtp.sink.messages) == STEPS
    assert len(set(smtp.sink.message_ids())) == STEPS  # each email once, none twice
    assert await _statuses(engine) == Counter({"success": STEPS})
    retried = await count(engine, Message, Message.attempts == 2, Message.status == "sent")
    assert retried == 1


async def test_a_batch_whose_leases_ran_out_sends_nothing_and_the_rescuer_sends_each_once(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    stalled = _worker(app, settings, clock, "stalled")
    rescuer = _worker(app, settings, clock, "rescuer")
    await _queued_sends(client, auth, stalled)
    sends = await _claim_sends(stalled)
    clock.advance(seconds=settings.job_lease_seconds + 1)
    rescued = await rescuer.claim(100)
    assert sorted(job.id for job in rescued) == sorted(job.id for job in sends)

    assert await stalled.run_batch(sends) == ["lost"] * STEPS
    assert smtp.sink.messages == []
    assert await rescuer.run_batch(rescued) == ["done"] * STEPS
    assert len(smtp.sink.messages) == STEPS
    assert len(set(smtp.sink.message_ids())) == STEPS


async def test_a_lease_lost_mid_batch_keeps_nothing_of_it_and_the_rescuer_finishes(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    """A batch locks no job row, so a rescue never waits for it. Once a lease in it has
    been taken over, nothing of the batch is kept and its jobs are the rescuer's: their
    emails go out again with the same Message-IDs (raw duplicates), each row is written
    once. On SQLite the rescue waits for the batch's write lock instead, and finds the
    jobs done."""
    slow = _worker(app, settings, clock, "slow")
    rescuer = _worker(app, settings, clock, "rescuer")
    await _queued_sends(client, auth, slow)
    sends = await _claim_sends(slow)
    smtp.sink.delay_seconds = 0.2  # each email takes a while: the batch is mid-send below
    slow.effects_batch_seconds = 60  # and all six go in one transaction all the same

    batch = asyncio.create_task(slow.run_batch(sends))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not smtp.sink.messages:
        assert loop.time() < deadline and not batch.done(), "the batch sent nothing"
        await asyncio.sleep(0.01)
    clock.advance(seconds=settings.job_lease_seconds + 1)  # every lease in it has run out
    rescued = await rescuer.claim(100)

    if engine.dialect.name == "sqlite":
        assert rescued == []
        assert await batch == ["done"] * STEPS
        assert len(smtp.sink.messages) == STEPS
    else:
        assert sorted(job.id for job in rescued) == sorted(job.id for job in sends)
        assert await batch == ["lost"] * STEPS
        assert await count(engine, Message) == 0  # the late batch kept nothing
        assert await rescuer.run_batch(rescued) == ["done"] * STEPS
        assert len(smtp.sink.messages) == 2 * STEPS
    assert len(set(smtp.sink.message_ids())) == STEPS
    assert await count(engine, Message, Message.status == "sent") == STEPS
    assert await _statuses(engine) == Counter({"success": STEPS})


async def test_a_batch_goes_on_in_a_new_transaction_once_it_has_held_one_long_enough(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    """A slow SMTP server must not keep one transaction (on SQLite, the write lock) open for
    a whole batch: past ``effects_batch_seconds`` the rest of it goes on in a new one."""
    worker = _worker(app, settings, clock, "batcher")
    await _queued_sends(client, auth, worker)
    sends = await _claim_sends(worker)
    worker.effects_batch_seconds = 0  # every email is "slow": one per transaction
    deletes: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM JOBS"):
            deletes.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        assert await worker.run_batch(sends) == ["done"] * STEPS
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)
    assert len(deletes) == STEPS  # each job completed in its own transaction
    assert len(smtp.sink.messages) == STEPS
    assert len(set(smtp.sink.message_ids())) == STEPS
    assert await _statuses(engine) == Counter({"success": STEPS})


def test_a_second_step_of_one_execution_reads_for_itself() -> None:
    """The batch read an execution once; a second step of it reads it after the first's
    writes rather than take a stale copy."""
    execution = Execution(id=1, organization_id=1, status="running", actions=[])
    reads = StepReads(executions={1: execution}, results={1: []})

    assert reads.take(1) == (execution, [])
    assert reads.take(1) is None
    assert reads.take(2) is None
    reads.messages = {(1, 0): None}
    assert reads.take_message(1, 0) == (True, None)
    assert reads.take_message(1, 0) == (False, None)


@pytest.mark.parametrize("batch_size", [1, 4])
async def test_message_steps_share_through_the_running_worker(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
    batch_size: int,
) -> None:
    """The claim loop deals message steps into batches of ``worker_batch_size``; with a
    batch size of 1 each runs alone. Either way each email goes out once."""
    runner = Worker(
        app.state.sessionmaker,
        settings.model_copy(update={"worker_batch_size": batch_size}),
        clock,
        services=app.state.services,
        name="runner",
        concurrency=2,
    )
    await _queued_sends(client, auth, runner, n=10)
    await runner.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (await _statuses(engine))["success"] < 10:
            assert loop.time() < deadline, await _statuses(engine)
            await asyncio.sleep(0.02)
    finally:
        await runner.stop()
    assert len(smtp.sink.messages) == 10
    assert len(set(smtp.sink.message_ids())) == 10


async def test_a_batch_whose_connection_dies_fails_each_job_once_and_none_is_lost(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    """The batch's server connection is terminated mid-batch. No job runs on the dead
    transaction after that (it would send before its first statement failed): those that
    ran are retried later, the rest go on in a new transaction, and nothing is lost."""
    if engine.dialect.name != "postgresql":
        pytest.skip("terminating a server backend is PostgreSQL's")
    worker = _worker(app, settings, clock, "batcher")
    await _queued_sends(client, auth, worker)
    sends = await _claim_sends(worker)
    smtp.sink.delay_seconds = 0.2
    worker.effects_batch_seconds = 60

    batch = asyncio.create_task(worker.run_batch(sends))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not smtp.sink.messages:
        assert loop.time() < deadline and not batch.done(), "the batch sent nothing"
        await asyncio.sleep(0.01)
    async with engine.connect() as conn:
        killed = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND state = 'idle in transaction'"
            )
        )
    assert killed == 1

    # The jobs that ran on the lost connection are retried later, not at once; the rest of
    # the batch goes on in a new transaction.
    outcomes = await batch
    lost = outcomes.count("retried")
    assert lost >= 1 and outcomes == ["retried"] * lost + ["done"] * (STEPS - lost)
    assert await count(engine, Message) == STEPS - lost  # none of the lost transaction's rows

    smtp.sink.delay_seconds = 0
    clock.advance(minutes=5)  # past the retries' backoff
    assert await worker.run_until_idle() == lost
    assert len(smtp.sink.messages) == STEPS + lost  # sent again: raw duplicates, same ids
    assert len(set(smtp.sink.message_ids())) == STEPS
    assert await _statuses(engine) == Counter({"success": STEPS})


async def test_a_batch_of_dispatches_reads_its_events_and_their_snapshots_once(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    worker = _worker(app, settings, clock, "batcher")
    await create_rule(client, auth, RULE)
    for i in range(STEPS):
        patient = {**PATIENT, "id": 700 + i % 3}  # three patients, each in two events
        await post_event(client, auth, "patient.onboarded", onboarded(patient))
    dispatches = await worker.claim(100)
    statements: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        assert await worker.run_batch(dispatches) == ["done"] * STEPS
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)

    tables = Counter(
        found.group(1)
        for s in statements
        if s.startswith("SELECT") and (found := re.search(r" FROM (\w+)", s))
    )
    assert tables["EVENTS"] == 1 and tables["ENTITIES"] == 1, tables
    # Routing read once for the batch too: the events' links, and the three journeys' open
    # episodes (under their locks, taken in one statement on PostgreSQL).
    assert tables["EPISODE_EVENTS"] == 1 and tables["EPISODES"] == 1, tables
    locks = [s for s in statements if "PG_ADVISORY_XACT_LOCK" in s]
    assert len(locks) == (1 if engine.dialect.name == "postgresql" else 0), locks
    # Each patient's two events share one episode, as they do routed one by one: the second
    # found the episode the first opened earlier in the batch.
    assert await count(engine, Episode) == 3
    assert await count(engine, EpisodeEvent) == STEPS
    # Each event started its execution and opened its form in the batch, as alone.
    sends = await _claim_sends(worker)
    assert len({job.payload["execution_id"] for job in sends}) == STEPS
    assert await worker.run_batch(sends) == ["done"] * STEPS
    assert await _statuses(engine) == Counter({"success": STEPS})


async def test_a_second_dispatch_of_one_event_in_a_batch_reads_what_the_first_wrote(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    worker = _worker(app, settings, clock, "batcher")
    await create_rule(client, auth, RULE)
    await post_event(client, auth, "patient.onboarded", onboarded(PATIENT))
    async with create_sessionmaker(engine)() as session, session.begin():
        [payload] = (await session.execute(select(Job.payload))).scalars().all()
        now = clock.now()
        await enqueue(session, DISPATCH_KIND, payload, run_at=now, now=now)  # the same event
    dispatches = await worker.claim(100)
    assert len(dispatches) == 2

    with capture_logs() as logs:
        assert await worker.run_batch(dispatches) == ["done", "done"]

    # The second found the event processed and its episode linked, as the first left them
    # in the batch's held writes: it added nothing, and the batch did not have to split.
    assert not [entry for entry in logs if entry["event"] == "jobs.batch_split"]
    assert await count(engine, Execution) == 1
    assert await count(engine, EpisodeEvent) == 1
    assert len(await _claim_sends(worker, 1)) == 1


async def test_a_batch_of_dispatches_joins_the_open_episodes_earlier_batches_opened(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    worker = _worker(app, settings, clock, "batcher")
    for round_ in range(2):
        for i in range(3):
            patient = {**PATIENT, "id": 700 + i}
            await post_event(client, auth, "patient.onboarded", onboarded(patient))
        dispatches = await worker.claim(100)
        assert len(dispatches) == 3
        assert await worker.run_batch(dispatches) == ["done"] * 3
        # One episode a patient's journey, the second round's events linked to it.
        assert await count(engine, Episode) == 3
        assert await count(engine, EpisodeEvent) == 3 * (round_ + 1)


async def test_an_episode_a_batch_opens_with_create_new_is_the_one_a_later_event_reuses(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    # Logins open a new onboarding episode each; onboarding joins the journey's open one.
    config = {
        "creation_mode": "create_new",
        "inbox_visibility": "visible",
        "journey_type": "onboarding",
        "suggested_assignment": "care_team",
        "suggested_priority": "medium",
        "expected_next_actor": "practice",
    }
    r = await client.put("/v1/pathway-configs/patient.logged_in", json=config, headers=auth())
    assert r.status_code == 200, r.text
    worker = _worker(app, settings, clock, "batcher")
    await post_event(client, auth, "patient.logged_in", onboarded(PATIENT))
    await post_event(client, auth, "patient.onboarded", onboarded(PATIENT))
    dispatches = await worker.claim(100)
    assert len(dispatches) == 2

    assert await worker.run_batch(dispatches) == ["done", "done"]

    # The batch read the journey's open episodes before the login opened one: the onboarding
    # event found that one all the same, as it would have routed alone.
    assert await count(engine, Episode) == 1
    assert await count(engine, EpisodeEvent) == 2
