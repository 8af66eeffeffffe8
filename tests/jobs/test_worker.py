from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.config import Settings
from careflow.jobs import store
from careflow.jobs.errors import DeferJob, PermanentJobError, RetryableJobError
from careflow.jobs.models import JobStatus
from careflow.jobs.queue import enqueue
from careflow.jobs.registry import JobContext, job_handler
from careflow.kit.clock import FrozenClock
from careflow.kit.metrics import REGISTRY
from tests.jobs.conftest import MakeWorker, add_job, all_jobs, effects, eventually, only_job

pytestmark = pytest.mark.usefixtures("effects_table")

# -- test-only handlers: behaviour comes from the worker's ``services`` ------------------


@job_handler("test.effect")
async def effect(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Write a side effect row, then optionally fail or enqueue follow-ups."""
    await ctx.session.execute(
        text("INSERT INTO test_job_effects (job_id, label, attempt) VALUES (:j, :l, :a)"),
        {"j": ctx.job_id, "l": ctx.services.get("label", ""), "a": ctx.attempt},
    )
    failure = ctx.services.get("fail")
    if failure is not None:
        raise failure() if callable(failure) else failure
    now = ctx.clock.now()
    for delay in payload.get("then", []):
        run_at = now + timedelta(seconds=delay)
        await enqueue(ctx.session, "test.effect", {}, run_at=run_at, now=now)


@job_handler("test.block")
async def block(ctx: JobContext, payload: dict[str, Any]) -> None:
    """Wait for the test to open the gate; touches the database only afterwards."""
    ctx.services["started"].set()
    await ctx.services["gate"].wait()


@job_handler("test.context")
async def capture_context(ctx: JobContext, payload: dict[str, Any]) -> None:
    ctx.services["seen"].append(ctx)


@job_handler("test.attempts")
async def record_attempt(ctx: JobContext, payload: dict[str, Any]) -> None:
    ctx.services["attempts"].append((ctx.attempt, ctx.is_last_attempt))
    raise RetryableJobError("again", delay_seconds=1)


@job_handler("test.count_running")
async def count_running(ctx: JobContext, payload: dict[str, Any]) -> None:
    ctx.services["started"].append(ctx.job_id)
    await ctx.services["gate"].wait()


def metric(kind: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("careflow_jobs_total", {"kind": kind, "outcome": outcome})
    return value or 0.0


Maker = async_sessionmaker[AsyncSession]


class TestRunUntilIdle:
    async def test_runs_due_jobs_and_leaves_future_ones_until_the_clock_moves(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, engine: AsyncEngine
    ) -> None:
        worker = make_worker()
        await add_job(sessionmaker, clock, "test.effect")
        await add_job(sessionmaker, clock, "test.effect")
        await add_job(sessionmaker, clock, "test.effect", run_at=clock.now() + timedelta(hours=1))

        assert await worker.run_until_idle() == 2
        assert [j.run_at for j in await all_jobs(sessionmaker)] == [
            clock.now() + timedelta(hours=1)
        ]
        assert await worker.run_until_idle() == 0

        clock.advance(hours=1)
        assert await worker.run_until_idle() == 1
        assert await all_jobs(sessionmaker) == []
        assert [e[0] for e in await effects(engine)] == [1, 2, 3]

    async def test_runs_jobs_that_handlers_enqueue_when_they_are_due(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        await add_job(sessionmaker, clock, "test.effect", {"then": [0, 0, 300]})

        assert await make_worker().run_until_idle() == 3
        clock.advance(minutes=5)
        assert await make_worker().run_until_idle() == 1

    async def test_max_jobs_bounds_a_run(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        for _ in range(3):
            await add_job(sessionmaker, clock, "test.effect")
        worker = make_worker()
        assert await worker.run_until_idle(max_jobs=2) == 2
        assert await worker.run_until_idle() == 1

    async def test_context_carries_the_job_and_the_services(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        seen: list[JobContext] = []
        await add_job(sessionmaker, clock, "test.context", max_attempts=3)
        services = {"smtp": object(), "seen": seen}
        await make_worker(services=services).run_until_idle()

        [ctx] = seen
        assert (ctx.job_id, ctx.kind, ctx.attempt, ctx.max_attempts) == (1, "test.context", 1, 3)
        assert ctx.services is services and ctx.clock is clock
        assert not ctx.is_last_attempt


class TestFailures:
    async def test_retryable_error_backs_off_then_dies_keeping_last_error(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, engine: AsyncEngine
    ) -> None:
        failing = make_worker(services={"fail": RetryableJobError("smtp 451")})
        await add_job(sessionmaker, clock, "test.effect", max_attempts=3)
        dead_before = metric("test.effect", "dead")

        for attempt, base_delay in ((1, 1.0), (2, 2.0)):
            assert await failing.run_until_idle() == 1
            job = await only_job(sessionmaker)
            assert (job.status, job.attempts, job.locked_by) == (JobStatus.QUEUED, attempt, None)
            assert job.last_error == "RetryableJobError: smtp 451"
            delay = (job.run_at - clock.now()).total_seconds()
            assert 0.8 * base_delay <= delay <= 1.2 * base_delay
            assert await failing.run_until_idle() == 0  # not due yet
            clock.set(job.run_at)

        assert await failing.run_until_idle() == 1
        job = await only_job(sessionmaker)
        assert (job.status, job.attempts) == (JobStatus.DEAD, 3)
        assert job.last_error == "RetryableJobError: smtp 451"
        clock.advance(days=1)
        assert await failing.run_until_idle() == 0
        # Every attempt's own writes were rolled back with it.
        assert await effects(engine) == []
        assert metric("test.effect", "dead") == dead_before + 1

    async def test_retryable_error_with_a_delay_uses_it_exactly(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        worker = make_worker(services={"fail": RetryableJobError("rate", delay_seconds=90)})
        await add_job(sessionmaker, clock, "test.effect")
        await worker.run_until_idle()
        assert (await only_job(sessionmaker)).run_at == clock.now() + timedelta(seconds=90)

    async def test_unexpected_exception_is_retried_with_where_not_what(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        worker = make_worker(services={"fail": lambda: ValueError("ada@example.com")})
        await add_job(sessionmaker, clock, "test.effect")
        await worker.run_until_idle()
        job = await only_job(sessionmaker)
        assert (job.status, job.attempts) == (JobStatus.QUEUED, 1)
        assert "ValueError (message withheld)" in (job.last_error or "")
        assert 'File "' in (job.last_error or "")
        # A driver's message can quote patient data: it never reaches last_error.
        assert "ada@example.com" not in (job.last_error or "")

    async def test_permanent_error_is_dead_at_once_and_frees_its_dedupe_key(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        worker = make_worker(services={"fail": PermanentJobError("no such template")})
        await add_job(sessionmaker, clock, "test.effect", dedupe_key="k")
        assert await worker.run_until_idle() == 1

        job = await only_job(sessionmaker)
        assert (job.status, job.attempts, job.last_error) == (
            JobStatus.DEAD,
            1,
            "PermanentJobError: no such template",
        )
        assert job.dedupe_key is None
        await add_job(sessionmaker, clock, "test.effect", dedupe_key="k")
        assert len(await all_jobs(sessionmaker)) == 2

    async def test_defer_reschedules_without_counting_an_attempt(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, engine: AsyncEngine
    ) -> None:
        until = clock.now() + timedelta(hours=10)
        deferring = make_worker(services={"fail": DeferJob(until, "quiet hours")})
        await add_job(sessionmaker, clock, "test.effect", max_attempts=1)

        assert await deferring.run_until_idle() == 1
        job = await only_job(sessionmaker)
        assert (job.status, job.attempts, job.run_at, job.last_error) == (
            JobStatus.QUEUED,
            0,
            until,
            None,
        )
        assert await deferring.run_until_idle() == 0

        clock.set(until)
        assert await make_worker(services={"label": "ok"}).run_until_idle() == 1
        assert await effects(engine) == [(1, "ok", 1)]

    async def test_unknown_kind_is_retried_with_a_clear_error(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        await add_job(sessionmaker, clock, "test.nobody_handles_this")
        await make_worker().run_until_idle()
        job = await only_job(sessionmaker)
        assert job.status == JobStatus.QUEUED
        assert "no handler registered" in (job.last_error or "")

    async def test_handler_sees_its_attempt_number(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        attempts: list[tuple[int, bool]] = []
        await add_job(sessionmaker, clock, "test.attempts", max_attempts=2)
        worker = make_worker(services={"attempts": attempts})
        await worker.run_until_idle()
        clock.advance(seconds=1)
        await worker.run_until_idle()
        assert attempts == [(1, False), (2, True)]


class TestBackoff:
    def test_doubles_per_attempt_within_jitter_and_is_capped(self) -> None:
        rng = random.Random(7)
        for attempt, expected in ((1, 2.0), (2, 4.0), (5, 32.0)):
            delay = store.backoff_seconds(attempt, 2.0, rng=rng)
            assert 0.8 * expected <= delay <= 1.2 * expected
        assert store.backoff_seconds(40, 2.0, cap=60, rng=rng) <= 72

    def test_jitter_spreads_retries(self) -> None:
        rng = random.Random(1)
        assert len({store.backoff_seconds(3, 1.0, rng=rng) for _ in range(20)}) > 1


class TestLeases:
    async def test_a_dead_workers_job_runs_elsewhere_and_its_late_completion_is_refused(
        self,
        make_worker: MakeWorker,
        sessionmaker: Maker,
        clock: FrozenClock,
        engine: AsyncEngine,
        settings: Settings,
    ) -> None:
        stalled = make_worker(name="stalled", services={"label": "stalled"})
        rescuer = make_worker(name="rescuer", services={"label": "rescuer"})
        await add_job(sessionmaker, clock, "test.effect")
        [claimed] = await stalled.claim(1)
        job = await only_job(sessionmaker)
        assert (job.status, job.locked_by, job.attempts) == (JobStatus.RUNNING, "stalled", 1)

        assert await rescuer.run_until_idle() == 0  # the lease still holds
        clock.advance(seconds=settings.job_lease_seconds + 1)
        assert await rescuer.run_until_idle() == 1

        assert await stalled.run_batch([claimed]) == ["lost"]
        assert await effects(engine) == [(1, "rescuer", 2)]
        assert await all_jobs(sessionmaker) == []

    async def test_a_late_workers_failure_is_refused_too(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, settings: Settings
    ) -> None:
        stalled = make_worker(name="stalled", services={"fail": PermanentJobError("late")})
        rescuer = make_worker(name="rescuer")
        await add_job(sessionmaker, clock, "test.effect")
        [late] = await stalled.claim(1)
        clock.advance(seconds=settings.job_lease_seconds + 1)
        [current] = await rescuer.claim(1)

        assert await stalled.run_batch([late]) == ["lost"]
        job = await only_job(sessionmaker)
        assert (job.status, job.locked_by, job.attempts) == (JobStatus.RUNNING, "rescuer", 2)
        assert await rescuer.run_batch([current]) == ["done"]

    async def test_an_expired_job_out_of_attempts_is_dead(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, settings: Settings
    ) -> None:
        await add_job(sessionmaker, clock, "test.effect", max_attempts=1)
        await make_worker(name="crashed").claim(1)
        clock.advance(seconds=settings.job_lease_seconds + 1)

        assert await make_worker().run_until_idle() == 0
        job = await only_job(sessionmaker)
        assert (job.status, job.last_error) == (JobStatus.DEAD, store.LEASE_LOST_ERROR)

    async def test_heartbeat_extends_the_lease_while_the_job_runs(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        lease = timedelta(seconds=0.3)
        services = {"gate": asyncio.Event(), "started": asyncio.Event()}
        worker = make_worker(services=services, job_lease_seconds=lease.total_seconds())
        await add_job(sessionmaker, clock, "test.block")
        await worker.start()
        await eventually(services["started"].is_set)
        assert (await only_job(sessionmaker)).lease_expires_at == clock.now() + lease

        clock.advance(seconds=0.1)  # still within the lease, so nothing may rescue it

        async def renewed() -> bool:
            return (await only_job(sessionmaker)).lease_expires_at == clock.now() + lease

        await eventually(renewed)
        services["gate"].set()
        await eventually(lambda: _no_jobs(sessionmaker))


async def _no_jobs(sessionmaker: Maker) -> bool:
    return await all_jobs(sessionmaker) == []


class TestRunningWorker:
    async def test_commit_of_an_enqueue_wakes_the_worker_at_once(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock, engine: AsyncEngine
    ) -> None:
        worker = make_worker(job_poll_interval_seconds=30)
        await worker.start()
        await eventually(lambda: worker.is_idle)

        await add_job(sessionmaker, clock, "test.effect")
        await eventually(lambda: _no_jobs(sessionmaker), within=2)
        assert len(await effects(engine)) == 1

    async def test_a_future_job_runs_when_due_without_waiting_for_the_poll(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        worker = make_worker(job_poll_interval_seconds=30)
        await worker.start()
        await add_job(
            sessionmaker, clock, "test.effect", run_at=clock.now() + timedelta(seconds=0.2)
        )
        clock.advance(seconds=0.2)
        await eventually(lambda: _no_jobs(sessionmaker), within=2)

    async def test_runs_at_most_concurrency_jobs_at_once(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        started: list[int] = []
        gate = asyncio.Event()
        for _ in range(3):
            await add_job(sessionmaker, clock, "test.count_running")
        worker = make_worker(concurrency=2, services={"started": started, "gate": gate})
        await worker.start()
        await eventually(lambda: len(started) == 2)
        statuses = sorted(j.status for j in await all_jobs(sessionmaker))
        assert statuses == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RUNNING]

        gate.set()
        await eventually(lambda: _no_jobs(sessionmaker))
        assert sorted(started) == [1, 2, 3]

    async def test_graceful_stop_lets_an_inflight_job_finish(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        services = {"gate": asyncio.Event(), "started": asyncio.Event()}
        worker = make_worker(services=services)
        await add_job(sessionmaker, clock, "test.block")
        await worker.start()
        await eventually(services["started"].is_set)

        stopping = asyncio.create_task(worker.stop(grace_seconds=10))
        await asyncio.sleep(0)
        assert not stopping.done()
        services["gate"].set()
        await stopping
        assert await all_jobs(sessionmaker) == []

    async def test_stop_releases_a_job_that_does_not_finish_in_time(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        services = {"gate": asyncio.Event(), "started": asyncio.Event()}
        worker = make_worker(services=services)
        await add_job(sessionmaker, clock, "test.block")
        await worker.start()
        await eventually(services["started"].is_set)

        await worker.stop(grace_seconds=0.05)
        job = await only_job(sessionmaker)
        assert (job.status, job.attempts, job.locked_by, job.lease_expires_at) == (
            JobStatus.QUEUED,
            0,
            None,
            None,
        )
        # Nothing claims after stop, and the released job runs on the next worker.
        services["gate"].set()
        assert await make_worker(services=services).run_until_idle() == 1

    async def test_stopped_worker_no_longer_claims(
        self, make_worker: MakeWorker, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        worker = make_worker()
        await worker.start()
        await worker.stop()
        await add_job(sessionmaker, clock, "test.effect")
        worker.wake()
        await asyncio.sleep(0)
        assert (await only_job(sessionmaker)).status == JobStatus.QUEUED
