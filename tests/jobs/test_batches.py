"""Batchable jobs: several in one transaction, and each still gets its own outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from careflow.config import Settings
from careflow.events.service import DISPATCH_KIND
from careflow.executions.service import RUN_ACTION_KIND
from careflow.jobs.models import JobStatus
from careflow.jobs.registry import JobContext, Sharing, job_handler, sharing_of
from careflow.kit.clock import FrozenClock
from tests.jobs.conftest import MakeWorker, add_job, all_jobs, effects, eventually, only_job

pytestmark = pytest.mark.usefixtures("effects_table")

Maker = async_sessionmaker[AsyncSession]


@job_handler("test.batched", sharing=Sharing.ROWS)
async def batched(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Write a row, remember the session it ran in, and fail when the payload says so."""
    await ctx.session.execute(
        text("INSERT INTO test_job_effects (job_id, label, attempt) VALUES (:j, '', :a)"),
        {"j": ctx.job_id, "a": ctx.attempt},
    )
    ctx.services.setdefault("sessions", []).append((ctx.job_id, ctx.session))
    if payload.get("fail"):
        raise RuntimeError("this job fails")


@job_handler(
    "test.batched_if",
    sharing=lambda payload: Sharing.ROWS if payload.get("db_only") else Sharing.ALONE,
)
async def batched_if(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Batchable only for some payloads."""


@job_handler("test.gated")
async def gated(ctx: JobContext, payload: dict[str, Any]) -> None:
    ctx.services["started"].append(ctx.job_id)
    await ctx.services["gate"].wait()


async def _effects(engine: AsyncEngine) -> list[tuple[int, int]]:
    return [(job_id, attempt) for job_id, _, attempt in await effects(engine)]


def _groups(sessions: list[tuple[int, Any]]) -> list[list[int]]:
    """Job ids grouped by the session (the transaction) they ran in, in run order."""
    groups: list[list[int]] = []
    last = None
    for job_id, session in sessions:
        if session is not last:
            groups.append([])
            last = session
        groups[-1].append(job_id)
    return groups


async def test_batchable_jobs_share_one_transaction(
    make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, engine: AsyncEngine
) -> None:
    for _ in range(6):
        await add_job(sessionmaker, clock, "test.batched")
    services: dict[str, Any] = {}
    worker = make_worker(concurrency=1, services=services, worker_batch_size=3)
    await worker.start()
    await eventually(lambda: _drained(sessionmaker))

    # The first claim asks for one job per slot; having found a batchable one, the next
    # claims ask for a batch per slot.
    assert _groups(services["sessions"]) == [[1], [2, 3, 4], [5, 6]]
    assert await _effects(engine) == [(i, 1) for i in range(1, 7)]


async def test_a_failing_job_in_a_batch_fails_alone_and_the_rest_commit_once(
    make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, engine: AsyncEngine
) -> None:
    await add_job(sessionmaker, clock, "test.batched")
    await add_job(sessionmaker, clock, "test.batched", {"fail": True})
    await add_job(sessionmaker, clock, "test.batched")
    worker = make_worker(services={})

    outcomes = await worker.run_batch(await worker.claim(3))

    assert outcomes == ["done", "retried", "done"]
    # The batch's transaction was rolled back whole; each job then ran alone.
    assert await _effects(engine) == [(1, 1), (3, 1)]
    job = await only_job(sessionmaker)
    assert (job.id, job.status, job.attempts) == (2, JobStatus.QUEUED, 1)
    assert job.last_error is not None and "RuntimeError" in job.last_error


async def test_a_lost_lease_in_a_batch_refuses_that_job_only(
    make_worker: MakeWorker,
    sessionmaker: Maker,
    clock: FrozenClock,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    await add_job(sessionmaker, clock, "test.batched")
    await add_job(sessionmaker, clock, "test.batched")
    stalled = make_worker(name="stalled", services={})
    rescuer = make_worker(name="rescuer", services={})
    lease = settings.job_lease_seconds
    [first] = await stalled.claim(1)
    clock.advance(seconds=lease / 2)
    [second] = await stalled.claim(1)
    clock.advance(seconds=lease / 2 + 1)  # the first lease has run out, the second has not
    [rescued] = await rescuer.claim(1)
    assert rescued.id == first.id

    assert await stalled.run_batch([first, second]) == ["lost", "done"]
    assert await rescuer.run_batch([rescued]) == ["done"]
    assert await _effects(engine) == [(1, 2), (2, 1)]
    assert await all_jobs(sessionmaker) == []


async def test_a_claim_is_split_into_batches_of_batchable_jobs_and_single_others(
    make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
) -> None:
    for db_only in (True, True, False, True, True, True, False):
        await add_job(sessionmaker, clock, "test.batched_if", {"db_only": db_only})
    worker = make_worker(worker_batch_size=3)

    batches = worker._batches(await worker.claim(7))

    assert [[job.id for job in batch] for batch in batches] == [[1, 2, 4], [3], [5, 6], [7]]
    assert worker._per_slot == 1  # single-slot jobs seen: the next claim takes one per slot


async def test_jobs_beyond_the_free_slots_wait_their_turn_in_a_slot(
    make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
) -> None:
    """A claim that finds more single-slot jobs than free slots keeps them, never runs more
    than the slots at once, and gives nothing back (no UPDATE churn on the queue)."""
    for _ in range(3):
        await add_job(sessionmaker, clock, "test.gated")
    services: dict[str, Any] = {"started": [], "gate": asyncio.Event()}
    worker = make_worker(concurrency=2, services=services, worker_batch_size=4)
    worker._per_slot = 4  # as after a claim that found only batchable jobs
    await worker.start()
    await eventually(lambda: len(services["started"]) == 2)

    jobs = await all_jobs(sessionmaker)
    assert [(j.status, j.attempts, j.locked_by) for j in jobs] == [
        (JobStatus.RUNNING, 1, worker.name)
    ] * 3
    assert len(services["started"]) == 2  # the third waits behind the first in its slot
    services["gate"].set()
    await eventually(lambda: _drained(sessionmaker))
    assert sorted(services["started"]) == [1, 2, 3]


async def test_a_job_on_a_later_attempt_runs_alone(
    make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, settings: Settings
) -> None:
    """A rescued job may meet the locks of the worker that stalled on it: alone, it holds up
    no batch while it waits."""
    for _ in range(3):
        await add_job(sessionmaker, clock, "test.batched")
    await make_worker(name="stalled").claim(1)
    clock.advance(seconds=settings.job_lease_seconds + 1)
    worker = make_worker(name="rescuer", worker_batch_size=3)
    await worker.claim(0)  # rescues the expired lease, claims nothing

    batches = worker._batches(await worker.claim(3))

    assert [[(job.id, job.attempt) for job in batch] for batch in batches] == [
        [(1, 2)],
        [(2, 1), (3, 1)],
    ]


def test_batches_are_dealt_over_the_free_slots_oldest_first(
    make_worker: MakeWorker,
) -> None:
    batches = [[object()] for _ in range(5)]
    slots = make_worker()._slots(batches, 2)  # type: ignore[arg-type]
    assert slots == [[batches[0], batches[2], batches[4]], [batches[1], batches[3]]]
    assert make_worker()._slots(batches[:1], 8) == [[batches[0]]]  # type: ignore[arg-type]


def test_sharing_is_declared_per_kind_or_per_payload() -> None:
    assert sharing_of("test.batched", {}) is Sharing.ROWS
    assert sharing_of("test.batched_if", {"db_only": True}) is Sharing.ROWS
    assert sharing_of("test.batched_if", {}) is Sharing.ALONE
    assert sharing_of("no.such.kind", {}) is Sharing.ALONE
    assert sharing_of("noop", {}) is Sharing.ROWS


async def _drained(sessionmaker: Maker) -> bool:
    return await all_jobs(sessionmaker) == []


def test_run_action_shares_plainly_for_row_writers_and_in_savepoints_for_messages() -> None:
    step = {"execution_id": 1, "action_index": 0}
    assert sharing_of(RUN_ACTION_KIND, {**step, "type": "require_form"}) is Sharing.ROWS
    assert sharing_of(RUN_ACTION_KIND, {**step, "type": "update_segment"}) is Sharing.ROWS
    assert sharing_of(RUN_ACTION_KIND, {**step, "type": "send_email"}) is Sharing.EFFECTS
    assert sharing_of(RUN_ACTION_KIND, {**step, "type": "send_sms"}) is Sharing.EFFECTS
    assert sharing_of(RUN_ACTION_KIND, {**step, "type": "send_email"}) is not Sharing.ROWS
    # Enqueued before the type was recorded, or of a type this worker does not know.
    assert sharing_of(RUN_ACTION_KIND, step) is Sharing.ALONE
    assert sharing_of(RUN_ACTION_KIND, {**step, "type": "webhook"}) is Sharing.ALONE
    assert sharing_of(DISPATCH_KIND, {"event_id": 1}) is Sharing.ROWS


@job_handler("test.batched_gate", sharing=Sharing.ROWS)
async def batched_gate(ctx: JobContext, payload: dict[str, Any]) -> None:
    if payload.get("gate"):
        ctx.services["started"].set()
        await ctx.services["gate"].wait()


async def test_leases_lost_while_a_batch_runs_are_refused_and_nothing_crashes(
    make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
) -> None:
    await add_job(sessionmaker, clock, "test.batched_gate", {"gate": True})
    await add_job(sessionmaker, clock, "test.batched_gate")
    services: dict[str, Any] = {"started": asyncio.Event(), "gate": asyncio.Event()}
    stalled = make_worker(name="stalled", services=services, job_lease_seconds=0.3)
    rescuer = make_worker(name="rescuer", services=services, job_lease_seconds=0.3)
    batch = await stalled.claim(2)
    running = asyncio.create_task(stalled.run_batch(batch))
    await eventually(services["started"].is_set)

    with capture_logs() as logs:
        clock.advance(seconds=5)  # both leases run out while the batch waits
        assert len(await rescuer.claim(2)) == 2
        assert {job.locked_by for job in await all_jobs(sessionmaker)} == {"rescuer"}
        # The stalled worker's heartbeat notices and lets go of both jobs.
        await eventually(lambda: any(e["event"] == "jobs.lease_lost" for e in logs))
    services["gate"].set()

    assert await running == ["lost", "lost"]
    assert {job.locked_by for job in await all_jobs(sessionmaker)} == {"rescuer"}
