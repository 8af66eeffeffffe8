"""The worker's loop: claims due jobs, deals them into batches and slots, and keeps going.

Each claim is shared across the organisations with due work and takes urgent jobs first
inside each (``jobs.claim``); the worker keeps the rotation its claims start from.

``Worker`` is one process's runner. Its claim loop asks for as many jobs as its free slots
can take (a batch per slot while the queue holds jobs that share, one job per slot while
it holds others), splits the claim into batches, deals them over the free slots and spawns
one task per slot (``_batch.BatchRunner.run_slot``). It never exits on a database outage:
it backs off and claims again. A housekeeping loop rescues expired leases on its own beat
and samples the queue's depth. ``stop()`` stops claiming, lets in-flight slots finish for
up to a lease, then cancels the rest, whose jobs go back to the queue uncounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.config import Settings
from careflow.jobs import claim, queue, service, store
from careflow.jobs.listener import NotifyListener, listen_dsn
from careflow.jobs.registry import Sharing
from careflow.jobs.store import ClaimedJob
from careflow.jobs.worker._batch import BatchRunner, job_sharing
from careflow.kit import listcounts
from careflow.kit.clock import Clock
from careflow.kit.idempotency import purge_expired
from careflow.kit.metrics import JOB_LAG

log = structlog.get_logger("careflow.jobs")

MAX_DB_BACKOFF_SECONDS = 30.0
HOUSEKEEPING_MAX_INTERVAL_SECONDS = 10.0
# When due jobs exist but another worker holds them (SKIP LOCKED), look again this soon.
CONTENDED_RETRY_SECONDS = 0.05


def default_worker_name() -> str:
    # locked_by is 64 characters; the random part keeps two workers of one process apart.
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class Worker:
    """Runs jobs for one process: ``start()``/``stop()`` in production, ``run_until_idle()``
    in tests. ``claim()`` and ``run_batch()`` are the two halves of one step, exposed so
    tests can play a worker that claims jobs and then stalls."""

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
        # Jobs claimed per free slot: the batch size while the queue holds batchable jobs,
        # one while it holds others (each of which takes a slot of its own).
        self._per_slot = 1
        # Where this worker's next claim starts among the organisations with due work.
        self._rotation = claim.Rotation()
        self.lease = timedelta(seconds=settings.job_lease_seconds)
        self.poll_interval = settings.job_poll_interval_seconds
        bind = sessionmaker.kw.get("bind")
        self._url = bind.url if isinstance(bind, AsyncEngine) else make_url(settings.database_url)
        self._runner = BatchRunner(
            sessionmaker, settings, clock, self.services, worker_name=self.name, lease=self.lease
        )
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

    @property
    def effects_batch_seconds(self) -> float:
        """How long a batch of jobs that act outside the database (emails) may keep its
        transaction open before the rest of it goes on in a new one."""
        return self._runner.effects_batch_seconds

    @effects_batch_seconds.setter
    def effects_batch_seconds(self, seconds: float) -> None:
        self._runner.effects_batch_seconds = seconds

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stopping.clear()
        self._loop = asyncio.get_running_loop()
        queue.add_wake_callback(self._on_enqueue)
        dsn = listen_dsn(self._url, self.settings)
        if dsn is not None:
            self._listener = NotifyListener(dsn, self.wake)
            self._listener.start()
        elif self.dialect == "postgresql":
            log.info("jobs.polling_only", reason="pooler without CAREFLOW_DATABASE_LISTEN_URL")
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
        ran = 0
        while ran < max_jobs:
            claimed = await self.claim(1)
            if not claimed:
                break
            for job in claimed:
                await self.run_batch([job])
                ran += 1
        return ran

    # -- one step: claim, then run -------------------------------------------------------

    async def claim(self, limit: int) -> list[ClaimedJob]:
        """Claim up to ``limit`` due jobs, rescuing expired leases first: one claim."""
        jobs, _ = await self._claim(limit, want_next=False)
        return jobs

    async def run_batch(self, batch: list[ClaimedJob]) -> list[str]:
        """Run claimed jobs as one batch, in a slot of its own, to one outcome each: done,
        retried, deferred, dead, lost, released. Together in one transaction when there are
        several (all sharing), else, or if that fails, one after another."""
        return await self._runner.run_slot([batch])

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
            jobs = await claim.claim_due(
                session,
                worker=self.name,
                now=now,
                lease=self.lease,
                limit=limit,
                rotation=self._rotation,
            )
            upcoming = None
            if want_next and len(jobs) < limit:
                upcoming = await claim.next_run_at(session)
        for job in jobs:
            JOB_LAG.observe(max(0.0, (now - job.run_at).total_seconds()))
        return jobs, upcoming

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
            for slot in self._slots(self._batches(jobs), free):
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

    def _batches(self, jobs: list[ClaimedJob]) -> list[list[ClaimedJob]]:
        """A claim's jobs as batches: of up to ``batch_size`` jobs that share, of one other.

        Jobs that share are spread over as many batches as there are, in the claim's order
        (organisations in turns, urgent then oldest inside each), one
        kind of sharing to a batch; how many jobs the next claim asks for per slot follows
        what this one found. A job on a second or later attempt runs alone: it may be one a
        stalled worker still holds locks for, and alone it holds up no batch while it waits
        for them.
        """
        together: dict[Sharing, list[ClaimedJob]] = {}
        singles: list[list[ClaimedJob]] = []
        for job in jobs:
            mode = job_sharing(job)
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
        batches += singles
        # The claim's order (organisations in turns, urgent then oldest inside each) is kept:
        # a batch goes where its first job was.
        first = {job.id: n for n, job in enumerate(jobs)}
        batches.sort(key=lambda batch: first[batch[0].id])
        return batches

    @staticmethod
    def _slots(batches: list[list[ClaimedJob]], free: int) -> list[list[list[ClaimedJob]]]:
        """Batches dealt over at most ``free`` slots, oldest first.

        A claim can find more batches than free slots (it asked for a batch per slot and
        found jobs that need a slot each): those wait their turn in a slot, under its
        heartbeat, rather than going back to the queue, which would cost an UPDATE of their
        rows and another claim. At most ``free`` jobs of this worker ever run at once.
        """
        slots: list[list[list[ClaimedJob]]] = [[] for _ in range(min(free, len(batches)))]
        for n, batch in enumerate(batches):
            slots[n % len(slots)].append(batch)
        return slots

    def _spawn(self, slot: list[list[ClaimedJob]]) -> None:
        task = asyncio.create_task(
            self._runner.run_slot(slot), name=f"careflow-job-{slot[0][0].id}"
        )
        self._inflight.add(task)
        task.add_done_callback(self._job_finished)

    def _job_finished(self, task: asyncio.Task[list[str]]) -> None:
        self._inflight.discard(task)
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("jobs.runner_crashed", error=type(task.exception()).__name__)

    async def _housekeeping_loop(self) -> None:
        """Rescue expired leases even when nothing is being claimed, sample the queue's
        depth, by status and by organisation (``service.sample_queue``), and fold the lists'
        count deltas in (``kit.listcounts``)."""
        interval = min(HOUSEKEEPING_MAX_INTERVAL_SECONDS, self.lease.total_seconds() / 2)
        while not self._stopping.is_set():
            try:
                async with self.sessionmaker() as session, session.begin():
                    rescued = await store.rescue_expired(session, self.clock.now())
                    await service.sample_queue(
                        session, self.clock.now(), top=self.settings.metrics_top_organizations
                    )
                    # Idempotency keys are kept 24 h; past that they are only weight.
                    await purge_expired(session, self.clock.now())
                # The lists' kept counts: the deltas their triggers wrote, folded in.
                async with self.sessionmaker() as session, session.begin():
                    await listcounts.compact(session)
                if rescued:
                    log.warning("jobs.leases_rescued", count=rescued, worker=self.name)
                    self.wake()
            except Exception as exc:  # transient; the next round tries again
                log.warning("jobs.housekeeping_failed", error=type(exc).__name__)
            await _wait_event(self._stopping, interval)


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
