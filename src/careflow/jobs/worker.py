"""The job runner: claims due jobs from the ``jobs`` table and runs their handlers.

Any number of workers, in any number of processes, share one table. A claimed job is
leased to its worker (``locked_by`` + ``lease_expires_at``, renewed by a heartbeat); a job
whose lease runs out is rescued and runs again elsewhere, and the late worker's
completion is refused because every write it makes is fenced on ``locked_by`` + ``attempts``.
The handler's work and the deletion of the job commit in one transaction, so a job is
done exactly when its effects are durable.

Jobs of kinds that share (``registry.Sharing``) run up to ``worker_batch_size`` at a time in
one transaction with one fenced DELETE: one commit for the batch instead of one per job,
the kind's prefetch reads for the whole batch at once, and the writes the jobs leave for
the end (``jobs.held_writes``) go as one statement per kind of write. Jobs that only
write rows share plainly: if any of them fails, the batch is rolled back and each job runs
again alone. Jobs that act outside the database (an email) do not: one that fails gives
back the writes it held and gets its own outcome once the rest have committed, so the
others do not act twice. If a lease in the batch was lost, or the batch itself fails, it
is rolled back and each job runs again alone, so every job still gets its own outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import secrets
import signal
import socket
import time
import traceback
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.config import Settings
from careflow.jobs import held_writes, queue, store
from careflow.jobs.errors import DeferJob, JobError, PermanentJobError, RetryableJobError
from careflow.jobs.listener import NotifyListener, asyncpg_dsn
from careflow.jobs.prefetch import prefetch
from careflow.jobs.registry import HANDLERS, JobContext, Sharing, sharing_of
from careflow.jobs.store import ClaimedJob
from careflow.kit.clock import Clock, SystemClock
from careflow.kit.idempotency import purge_expired
from careflow.ops.metrics import JOB_LAG, JOBS, QUEUE_DEPTH

log = structlog.get_logger("careflow.jobs")

MAX_ERROR_CHARS = 4000
MAX_DB_BACKOFF_SECONDS = 30.0
HOUSEKEEPING_MAX_INTERVAL_SECONDS = 10.0
# A batch of emails keeps its transaction open about this long at most (a slow SMTP server).
EFFECTS_BATCH_SECONDS = 0.5
# When due jobs exist but another worker holds them (SKIP LOCKED), look again this soon.
CONTENDED_RETRY_SECONDS = 0.05

_handlers_loaded = False


class LeaseLostInBatch(JobError):
    """A lease in a batch was taken over while the batch ran: none of the batch is kept."""


class FailureNotIsolated(JobError):
    """A job of a batch failed after writing at once (not through the held writes), or on
    a statement: only a rollback of the whole batch takes that back."""


def load_handlers() -> None:
    """Import every task module once, tolerating ones that cannot be imported yet.

    A module that fails to import costs only its own job kinds (they retry with "no
    handler registered" and end dead, visibly); refusing to start would stop every kind.
    """
    global _handlers_loaded
    if _handlers_loaded:
        return
    from careflow.tasks import TASK_MODULES

    for name in TASK_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            if _is_the_module_itself(name, exc):
                log.warning("jobs.task_module_missing", module=name)
            else:
                log.error("jobs.task_module_broken", module=name, missing=exc.name)
    _handlers_loaded = True


def _is_the_module_itself(name: str, exc: ImportError) -> bool:
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    return missing is not None and (name == missing or name.startswith(missing + "."))


def default_worker_name() -> str:
    # locked_by is 64 characters; the random part keeps two workers of one process apart.
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class Worker:
    """Runs jobs for one process: ``start()``/``stop()`` in production, ``run_until_idle()``
    in tests. ``claim()`` and ``run_claimed()`` are the two halves of one step, exposed so
    tests can play a worker that claims a job and then stalls."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
        *,
        services: dict[str, Any] | None = None,
        name: str | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.clock = clock
        self.services = services if services is not None else {}
        self.name = name or default_worker_name()
        self.concurrency = max(1, concurrency or settings.worker_concurrency)
        self.batch_size = max(1, settings.worker_batch_size)
        # How long a batch of jobs that act outside the database (emails) may keep its
        # transaction open before the rest of it goes on in a new one: on SQLite that
        # transaction holds the database's one write lock, which the API's writes wait for.
        self.effects_batch_seconds = EFFECTS_BATCH_SECONDS
        # Jobs claimed per free slot: the batch size while the queue holds batchable jobs,
        # one while it holds others (each of which takes a slot of its own).
        self._per_slot = 1
        self.lease = timedelta(seconds=settings.job_lease_seconds)
        self.poll_interval = settings.job_poll_interval_seconds
        bind = sessionmaker.kw.get("bind")
        self._url = bind.url if isinstance(bind, AsyncEngine) else make_url(settings.database_url)
        # A batch of effects tells a failed job's held writes (given back) from writes it
        # made at once (which fail the batch) by the statements its connection counted.
        self._counted = isinstance(bind, AsyncEngine)
        if isinstance(bind, AsyncEngine):
            held_writes.count_statements(bind)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[list[str]]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._listener: NotifyListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._idle = False

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def dialect(self) -> str:
        return self._url.get_backend_name()

    @property
    def listening(self) -> bool:
        """True while the PostgreSQL LISTEN connection is up (readiness for tests)."""
        return self._listener is not None and self._listener.connected

    @property
    def is_idle(self) -> bool:
        """True while the claim loop sleeps with nothing due and nothing running."""
        return self._idle

    async def start(self) -> None:
        if self._started:
            return
        load_handlers()
        self._started = True
        self._stopping.clear()
        self._loop = asyncio.get_running_loop()
        queue.add_wake_callback(self._on_enqueue)
        if self.dialect == "postgresql":
            self._listener = NotifyListener(asyncpg_dsn(self._url), self.wake)
            self._listener.start()
        self._background = [
            asyncio.create_task(self._claim_loop(), name=f"careflow-jobs-claim-{self.name}"),
            asyncio.create_task(self._housekeeping_loop(), name="careflow-jobs-housekeeping"),
        ]
        log.info("jobs.worker_started", worker=self.name, concurrency=self.concurrency)

    async def stop(self, graceful: bool = True, grace_seconds: float | None = None) -> None:
        """Stop claiming; let in-flight jobs finish for up to ``grace_seconds`` (default: the
        lease), then cancel the rest and put them back in the queue uncounted."""
        if not self._started:
            return
        self._started = False
        self._stopping.set()
        self._wake.set()
        queue.remove_wake_callback(self._on_enqueue)
        claim_loop, *others = self._background
        # Let the claim loop finish a claim in progress so no claimed row is orphaned.
        await _finish_or_cancel({claim_loop}, seconds=10)
        grace = grace_seconds if grace_seconds is not None else self.lease.total_seconds()
        if self._inflight:
            log.info("jobs.worker_draining", worker=self.name, inflight=len(self._inflight))
            await _finish_or_cancel(set(self._inflight), seconds=grace if graceful else 0)
        await _finish_or_cancel(set(others), seconds=0)
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        self._background = []
        self._idle = False
        log.info("jobs.worker_stopped", worker=self.name)

    def cancel_inflight(self) -> None:
        """Interrupt running jobs now; each is put back in the queue uncounted."""
        for task in list(self._inflight):
            task.cancel()

    def wake(self) -> None:
        """Look for due jobs now instead of at the next poll (e.g. after moving a test clock)."""
        self._wake.set()

    def _on_enqueue(self) -> None:
        # Called after any commit in this process that enqueued a job, maybe from another
        # thread; asyncio events are not thread-safe.
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            loop.call_soon_threadsafe(self._wake.set)

    # -- test driver ---------------------------------------------------------------------

    async def run_until_idle(self, max_jobs: int = 100_000) -> int:
        """Run every job due at ``clock.now()``, one at a time, including ones that handlers
        enqueue meanwhile, until none is due. Returns how many ran."""
        load_handlers()
        ran = 0
        while ran < max_jobs:
            claimed = await self.claim(1)
            if not claimed:
                break
            for job in claimed:
                await self.run_claimed(job)
                ran += 1
        return ran

    # -- one step: claim, then run -------------------------------------------------------

    async def claim(self, limit: int) -> list[ClaimedJob]:
        jobs, _ = await self._claim(limit, want_next=False)
        return jobs

    async def _claim(
        self, limit: int, *, want_next: bool, want_rescue: bool = True
    ) -> tuple[list[ClaimedJob], Any]:
        async with self.sessionmaker() as session, session.begin():
            # The lease starts when the claim runs: a wait for the connection (pool, SQLite
            # lock, a pause of this process) must not hand out a lease already spent.
            await session.connection()
            now = self.clock.now()
            if want_rescue:
                rescued = await store.rescue_expired(session, now)
                if rescued:
                    log.warning("jobs.leases_rescued", count=rescued, worker=self.name)
            jobs = await store.claim_due(
                session, worker=self.name, now=now, lease=self.lease, limit=limit
            )
            upcoming = None
            if want_next and len(jobs) < limit:
                upcoming = await store.next_run_at(session)
        for job in jobs:
            JOB_LAG.observe(max(0.0, (now - job.run_at).total_seconds()))
        return jobs, upcoming

    async def run_claimed(self, job: ClaimedJob) -> str:
        """Run one claimed job to its outcome: done, retried, deferred, dead, lost, released."""
        [outcome] = await self.run_batch([job])
        return outcome

    async def run_batch(self, batch: list[ClaimedJob]) -> list[str]:
        """Run claimed jobs as one unit: together in one transaction when there are several
        (all batchable), else, or if that fails, one after another."""
        return await self.run_slot([batch])

    async def run_slot(self, units: list[list[ClaimedJob]]) -> list[str]:
        """Run one slot's units in turn, under one heartbeat for every job still held."""
        pending = [job for unit in units for job in unit]  # the leases the heartbeat keeps
        heartbeat = asyncio.create_task(self._heartbeat(pending))
        try:
            outcomes: list[str] = []
            for unit in units:
                outcomes.extend(await self._run_unit(unit, pending))
            return outcomes
        except asyncio.CancelledError:
            await self._release(pending)
            for job in pending:
                JOBS.labels(job.kind, "released").inc()
            raise
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _run_unit(self, unit: list[ClaimedJob], pending: list[ClaimedJob]) -> list[str]:
        if len(unit) > 1 and _sharing(unit[0]) is Sharing.EFFECTS and self._counted:
            return await self._run_effects(unit, pending)
        if len(unit) > 1 and await self._execute_together(unit):
            for job in unit:
                _finished(job, "done", pending)
            return ["done"] * len(unit)
        return [await self._run_alone(job, pending) for job in unit]

    async def _run_alone(self, job: ClaimedJob, pending: list[ClaimedJob]) -> str:
        outcome = await self._execute(job)
        _finished(job, outcome, pending)
        return outcome

    async def _run_effects(self, unit: list[ClaimedJob], pending: list[ClaimedJob]) -> list[str]:
        """A batch of jobs that act outside the database, in as many transactions as it takes
        to hold none open for much longer than ``effects_batch_seconds``."""
        outcomes: dict[int, str] = {}
        rest = unit
        while len(rest) > 1:
            finished, rest = await self._execute_each(rest)
            for job, outcome in finished:
                _finished(job, outcome, pending)
                outcomes[job.id] = outcome
        for job in rest:
            outcomes[job.id] = await self._run_alone(job, pending)
        return [outcomes[job.id] for job in unit]

    async def _execute_together(self, batch: list[ClaimedJob]) -> bool:
        """All of ``batch`` in one transaction; False (nothing written) if any job raised or
        any lease was lost, and the caller runs them one by one."""
        try:
            async with self.sessionmaker() as session:
                writes = held_writes.install(session)
                read = await self._prefetch(session, batch)
                for job in batch:
                    await self._call_handler(session, job, read.get(job.kind))
                await writes.flush(session)
                await session.flush()
                if await store.complete_many(session, batch) != len(batch):
                    await session.rollback()
                    log.info("jobs.batch_split", size=len(batch), reason="lease lost")
                    return False
                await session.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("jobs.batch_split", size=len(batch), reason=type(exc).__name__)
            return False
        return True

    async def _execute_each(
        self, batch: list[ClaimedJob]
    ) -> tuple[list[tuple[ClaimedJob, str]], list[ClaimedJob]]:
        """Jobs of ``batch`` in one transaction, until it has been open
        ``effects_batch_seconds``: the outcomes of those that ran, and the jobs left for
        another transaction.

        The jobs' writes are held (``jobs.held_writes``) and sent once for the batch at its
        end. A job whose lease was already taken over when the batch began is left out
        ("lost"). A job that raises gives back the writes it held, and its failure is
        recorded after the others commit, as it would be had it run alone. A job that raises
        after writing something at once, or on a failed statement, cannot be taken back
        alone (there is no savepoint: two round trips a job fewer), and fails the batch. If
        the transaction fails, or a lease was lost while it ran, nothing of it is kept and
        each job that ran gets that failure, as a job whose own transaction fails does: the
        run is not repeated at once, so an email is not sent again for a job that another
        worker now holds.
        """
        failed: dict[int, Exception] = {}
        ran: list[ClaimedJob] = []
        mine = batch
        started = time.monotonic()
        try:
            async with self.sessionmaker() as session:
                writes = held_writes.install(session)
                held = await store.still_held(session, batch)
                mine = [job for job in batch if job.id in held]
                read = await self._prefetch(session, mine) if mine else {}
                for job in mine:
                    if ran and time.monotonic() - started > self.effects_batch_seconds:
                        break
                    if not await _usable(session):
                        # A job's failure took the transaction with it (a lost connection):
                        # the next job would act (send) before its first statement failed.
                        break
                    ran.append(job)
                    mark = writes.mark()
                    before = await _written(session, writes)
                    try:
                        await self._call_handler(session, job, read.get(job.kind))
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        if not await _given_back(session, writes, mark, before, exc):
                            raise FailureNotIsolated() from exc
                        writes.discard_since(mark)
                        failed[job.id] = exc
                    else:
                        await session.flush()  # the ORM's, if any: a later failure's are its own
                done = [job for job in ran if job.id not in failed]
                await writes.flush(session)
                await session.flush()
                if done and await store.complete_many(session, done) != len(done):
                    raise LeaseLostInBatch()
                await session.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Every job of it that ran fails, or all of it if it failed before any ran (the
            # database is down): none is left to go round again.
            ran = ran or mine
            log.info("jobs.batch_failed", size=len(ran), error=type(exc).__name__)
            failed = dict.fromkeys((job.id for job in ran), exc)
        kept = {job.id for job in mine}
        finished: list[tuple[ClaimedJob, str]] = []
        for job in batch:
            if job.id not in kept:
                _job_log(job).warning("jobs.completion_refused")
                finished.append((job, "lost"))
        for job in ran:
            error = failed.get(job.id)
            outcome = "done" if error is None else await self._record_failure(job, error)
            finished.append((job, outcome))
        return finished, mine[len(ran) :]

    async def _prefetch(self, session: AsyncSession, batch: list[ClaimedJob]) -> dict[str, Any]:
        """Each kind's prefetch over its jobs in ``batch``, by kind."""
        return await prefetch(session, ((job.kind, job.payload) for job in batch))

    async def _execute(self, job: ClaimedJob) -> str:
        try:
            async with self.sessionmaker() as session:
                # A job alone reads ahead as a batch of one does: the same statements as its
                # own reads, and its locks taken in the order a batch takes them (a
                # dispatch's journeys before the appointment and milestone rows it writes).
                read = await self._prefetch(session, [job])
                await self._call_handler(session, job, read.get(job.kind))
                await session.flush()
                if not await store.complete(session, job):
                    # Our lease ran out and the job was rescued: its effects belong to the
                    # run that holds it now, so ours must not land.
                    await session.rollback()
                    _job_log(job).warning("jobs.completion_refused")
                    return "lost"
                await session.commit()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return await self._record_failure(job, exc)
        return "done"

    async def _call_handler(self, session: AsyncSession, job: ClaimedJob, prefetched: Any) -> None:
        handler = HANDLERS.get(job.kind)
        if handler is None:
            # Retryable, not dead: during a rolling deploy another worker may know the kind.
            raise RetryableJobError(f"no handler registered for job kind {job.kind!r}")
        ctx = JobContext(
            session=session,
            sessionmaker=self.sessionmaker,
            settings=self.settings,
            clock=self.clock,
            job_id=job.id,
            kind=job.kind,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            services=self.services,
            prefetched=prefetched,
        )
        await handler(ctx, job.payload)

    async def _record_failure(self, job: ClaimedJob, exc: Exception) -> str:
        """Write what happens next in a fresh transaction (the handler's was rolled back)."""
        log_ = _job_log(job)
        now = self.clock.now()
        error = _describe(exc)
        try:
            async with self.sessionmaker() as session, session.begin():
                if isinstance(exc, DeferJob):
                    outcome = "deferred"
                    held = await store.requeue(
                        session, job, run_at=exc.until, now=now, error=None, count_attempt=False
                    )
                elif isinstance(exc, PermanentJobError) or job.is_last_attempt:
                    outcome = "dead"
                    held = await store.bury(session, job, now=now, error=error)
                else:
                    outcome = "retried"
                    held = await store.requeue(
                        session, job, run_at=now + self._retry_delay(job, exc), now=now, error=error
                    )
        except Exception as bookkeeping_exc:
            # The lease will expire and rescue the job; nothing is lost, only delayed.
            log_.error("jobs.failure_not_recorded", error=type(bookkeeping_exc).__name__)
            return "lost"
        if not held:
            log_.warning("jobs.failure_refused", error=type(exc).__name__)
            return "lost"
        level = log_.info if outcome == "deferred" else log_.warning
        level(f"jobs.{outcome}", error=type(exc).__name__)
        return outcome

    def _retry_delay(self, job: ClaimedJob, exc: Exception) -> timedelta:
        if isinstance(exc, RetryableJobError) and exc.delay_seconds is not None:
            return timedelta(seconds=exc.delay_seconds)
        base = self.settings.job_backoff_base_seconds
        return timedelta(seconds=store.backoff_seconds(job.attempt, base))

    async def _release(self, held: list[ClaimedJob]) -> None:
        """Give interrupted jobs back without counting the attempt: they did not fail."""
        if not held:
            return
        try:
            async with self.sessionmaker() as session, session.begin():
                await store.release_many(session, held, now=self.clock.now())
            log.info("jobs.released", job_ids=[job.id for job in held])
        except Exception as exc:  # the lease expiring will release them instead
            log.error("jobs.release_failed", error=type(exc).__name__)

    async def _heartbeat(self, held: list[ClaimedJob]) -> None:
        """Renew the leases of ``held`` (which the runner shrinks as jobs finish)."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            if not held:
                return
            try:
                async with self.sessionmaker() as session, session.begin():
                    renewed = await store.extend_leases(
                        session, list(held), now=self.clock.now(), lease=self.lease
                    )
            except Exception as exc:  # keep trying while the lease lasts
                log.warning("jobs.heartbeat_failed", error=type(exc).__name__)
                continue
            lost = [job.id for job in held if job.id not in renewed]
            if lost:
                log.warning("jobs.lease_lost", job_ids=lost, worker=self.name)
                held[:] = [job for job in held if job.id in renewed]

    # -- background loops ----------------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                await self._sleep(self.poll_interval)  # a finishing job wakes us
                continue
            limit = free * self._per_slot
            try:
                # Expired leases are rescued by housekeeping on its own beat, not on every
                # claim: a claim then costs one statement, not two.
                jobs, upcoming = await self._claim(limit, want_next=True, want_rescue=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down or restarting: wait, never exit
                failures += 1
                delay = min(MAX_DB_BACKOFF_SECONDS, 0.5 * 2 ** min(failures - 1, 10))
                log.warning(
                    "jobs.claim_failed", error=type(exc).__name__, retry_in=delay, worker=self.name
                )
                await _wait_event(self._stopping, delay)
                continue
            if failures:
                log.info("jobs.database_back", worker=self.name)
                failures = 0
            for slot in self._slots(self._units(jobs), free):
                self._spawn(slot)
            if len(jobs) < limit:
                self._idle = not self._inflight
                await self._sleep(self._idle_delay(upcoming))
                self._idle = False

    def _idle_delay(self, upcoming: datetime | None) -> float:
        if upcoming is None:
            return self.poll_interval
        until = (upcoming - self.clock.now()).total_seconds()
        return min(self.poll_interval, max(CONTENDED_RETRY_SECONDS, until))

    async def _sleep(self, seconds: float) -> None:
        await _wait_event(self._wake, seconds)

    def _units(self, jobs: list[ClaimedJob]) -> list[list[ClaimedJob]]:
        """Claimed jobs as slot-sized units: batches of jobs that share, single others.

        Jobs that share are spread over as many batches as there are, oldest first, one
        kind of sharing to a batch; how many jobs the next claim asks for per slot follows
        what this one found. A job on a second or later attempt runs alone: it may be one a
        stalled worker still holds locks for, and alone it holds up no batch while it waits
        for them.
        """
        together: dict[Sharing, list[ClaimedJob]] = {}
        singles: list[list[ClaimedJob]] = []
        for job in jobs:
            mode = _sharing(job)
            if mode is Sharing.ALONE:
                singles.append([job])
            else:
                together.setdefault(mode, []).append(job)
        if jobs:
            self._per_slot = 1 if singles else self.batch_size
        size = self.batch_size
        batches = [
            group[i : i + size] for group in together.values() for i in range(0, len(group), size)
        ]
        units = batches + singles
        units.sort(key=lambda unit: (unit[0].run_at, unit[0].id))
        return units

    @staticmethod
    def _slots(units: list[list[ClaimedJob]], free: int) -> list[list[list[ClaimedJob]]]:
        """Units dealt over at most ``free`` slots, oldest first.

        A claim can find more units than free slots (it asked for a batch per slot and found
        jobs that need a slot each): those wait their turn in a slot, under its heartbeat,
        rather than going back to the queue, which would cost an UPDATE of their rows and
        another claim. At most ``free`` jobs of this worker ever run at once.
        """
        slots: list[list[list[ClaimedJob]]] = [[] for _ in range(min(free, len(units)))]
        for n, unit in enumerate(units):
            slots[n % len(slots)].append(unit)
        return slots

    def _spawn(self, slot: list[list[ClaimedJob]]) -> None:
        task = asyncio.create_task(self.run_slot(slot), name=f"careflow-job-{slot[0][0].id}")
        self._inflight.add(task)
        task.add_done_callback(self._job_finished)

    def _job_finished(self, task: asyncio.Task[list[str]]) -> None:
        self._inflight.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("jobs.runner_crashed", error=type(task.exception()).__name__)

    async def _housekeeping_loop(self) -> None:
        """Rescue expired leases even when nothing is being claimed, and sample queue depth."""
        interval = min(HOUSEKEEPING_MAX_INTERVAL_SECONDS, self.lease.total_seconds() / 2)
        while not self._stopping.is_set():
            try:
                async with self.sessionmaker() as session, session.begin():
                    rescued = await store.rescue_expired(session, self.clock.now())
                    depth = await store.depth_by_status(session)
                    # Idempotency keys are kept 24 h; past that they are only weight.
                    await purge_expired(session, self.clock.now())
                if rescued:
                    log.warning("jobs.leases_rescued", count=rescued, worker=self.name)
                    self.wake()
                for status in ("queued", "running", "dead"):
                    QUEUE_DEPTH.labels(status).set(depth.get(status, 0))
            except Exception as exc:  # transient; the next round tries again
                log.warning("jobs.housekeeping_failed", error=type(exc).__name__)
            await _wait_event(self._stopping, interval)


async def _usable(session: AsyncSession) -> bool:
    """Whether the session's transaction can still run statements: not one that a lost
    connection, or a savepoint that could not be rolled back, left to be rolled back."""
    transaction = session.sync_session.get_transaction()
    if transaction is not None and not transaction.is_active:
        return False
    try:
        connection = await session.connection()
    except Exception:
        return False
    return not connection.invalidated


async def _written(session: AsyncSession, writes: held_writes.HeldWrites) -> int:
    """The statements other than reads the session's connection has run, less those of the
    held writes' flushes: what a job of the batch wrote at once."""
    return await held_writes.statements_run(session) - writes.statements_sent


async def _given_back(
    session: AsyncSession,
    writes: held_writes.HeldWrites,
    mark: int,
    written_before: int,
    exc: BaseException,
) -> bool:
    """Whether a failed job of a batch is undone by giving back the writes it held: none of
    them was sent yet, it wrote nothing at once, left no ORM change behind, and no
    statement of it failed."""
    if not writes.can_discard_since(mark) or not _no_statement_failed(exc):
        return False
    if session.new or session.dirty or session.deleted:
        return False
    return await _written(session, writes) == written_before


def _no_statement_failed(exc: BaseException) -> bool:
    """No SQLAlchemy error in ``exc`` or its causes. On PostgreSQL a failed statement aborts
    the transaction, even one a handler turned into another error, as the runner turns an
    executor's crash into a retry."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SQLAlchemyError):
            return False
        seen = seen.__cause__ or seen.__context__
    return True


def _sharing(job: ClaimedJob) -> Sharing:
    return sharing_of(job.kind, job.payload) if job.attempt == 1 else Sharing.ALONE


def _finished(job: ClaimedJob, outcome: str, pending: list[ClaimedJob]) -> None:
    if job in pending:  # the heartbeat drops a job whose lease it lost
        pending.remove(job)
    JOBS.labels(job.kind, outcome).inc()


def _job_log(job: ClaimedJob) -> Any:
    return log.bind(job_id=job.id, kind=job.kind, attempt=job.attempt)


def _describe(exc: Exception) -> str:
    if isinstance(exc, JobError):
        text = f"{type(exc).__name__}: {exc}"
    else:
        # Unexpected failures keep where they happened, not what they said: a driver's
        # message can quote the row's values, and those can be patient data.
        frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
        text = f"{type(exc).__name__} (message withheld)\n{frames}"
    return text[-MAX_ERROR_CHARS:]


async def _wait_event(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


async def _finish_or_cancel(tasks: set[asyncio.Task[Any]], *, seconds: float) -> None:
    if not tasks:
        return
    if seconds > 0:
        _, pending = await asyncio.wait(tasks, timeout=seconds)
    else:
        pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_worker_process(concurrency: int | None = None) -> None:
    """``careflow worker``: run until SIGTERM/SIGINT, then finish or release in-flight jobs.

    A second signal stops at once (in-flight jobs are still released). Database outages
    are waited out inside the worker, never turned into an exit.
    """
    from careflow.config import get_settings
    from careflow.db import create_engine, create_sessionmaker
    from careflow.delivery.transports import close_transports
    from careflow.kit.heap import freeze_startup_heap
    from careflow.logging import configure_logging

    settings = get_settings()
    configure_logging(settings)
    queue.set_default_max_attempts(settings.job_max_attempts)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        from careflow.ops.metrics import REGISTRY

        start_http_server(settings.worker_metrics_port, addr="0.0.0.0", registry=REGISTRY)
    engine = create_engine(settings.database_url)
    worker = Worker(
        create_sessionmaker(engine), settings, SystemClock(), services={}, concurrency=concurrency
    )
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    try:
        await worker.start()
        freeze_startup_heap()
        await stop_requested.wait()
        log.info("jobs.shutdown_requested", worker=worker.name)
        stop_requested.clear()
        graceful = asyncio.create_task(worker.stop(graceful=True))
        second_signal = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({graceful, second_signal}, return_when=asyncio.FIRST_COMPLETED)
        if not graceful.done():
            log.warning("jobs.shutdown_forced", worker=worker.name)
            worker.cancel_inflight()
            await graceful
        second_signal.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await close_transports(worker.services)
        await engine.dispose()
