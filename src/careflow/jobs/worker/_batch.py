"""Running claimed jobs: a slot's batches in turn, each to one outcome per job.

A *batch* is what a slot runs as one: up to ``worker_batch_size`` jobs of one kind of
sharing (``registry.Sharing``), or a single job (a batch of one). A *slot* is one of the
worker's ``concurrency`` tasks; it runs its batches in turn under one heartbeat that keeps
the leases of every job it still holds.

Jobs that share run in one transaction with one fenced DELETE: one commit for the batch
instead of one per job, the kind's prefetch reads for the whole batch at once, and
the writes the jobs leave for the end (``jobs.held_writes``) go as one statement per kind
of write. Jobs that only write rows share plainly: if any of them fails, the batch is
rolled back and each job runs again alone. Jobs that act outside the database (an email)
do not: one that fails gives back the writes it held and gets its own outcome once the
rest have committed, so the others do not act twice. If a lease in the batch was lost, or
the batch itself fails, it is rolled back and each job runs again alone, so every job
still gets its own outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow import tracing
from careflow.config import Settings
from careflow.jobs import held_writes, store
from careflow.jobs.errors import DeferJob, JobError, RetryableJobError
from careflow.jobs.prefetch import PrefetchContext, prefetch
from careflow.jobs.registry import HANDLERS, JobContext, Sharing, sharing_of
from careflow.jobs.store import ClaimedJob
from careflow.jobs.worker._outcomes import Outcomes, finished, job_log
from careflow.kit.clock import Clock
from careflow.kit.context import request_id_var
from careflow.kit.metrics import JOBS

log = structlog.get_logger("careflow.jobs")

# A batch of emails keeps its transaction open about this long at most (a slow SMTP server).
EFFECTS_BATCH_SECONDS = 0.5


class LeaseLostInBatch(JobError):
    """A lease in a batch was taken over while the batch ran: none of the batch is kept."""


class FailureNotIsolated(JobError):
    """A job of a batch failed after writing at once (not through the held writes), or on
    a statement: only a rollback of the whole batch takes that back."""


class BatchRunner:
    """Runs a slot's batches for one worker; every job ends with an outcome: done, retried,
    deferred, dead, lost or released."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
        services: dict[str, Any],
        *,
        worker_name: str,
        lease: timedelta,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.clock = clock
        self.services = services
        self.worker_name = worker_name
        self.lease = lease
        # How long a batch of jobs that act outside the database (emails) may keep its
        # transaction open before the rest of it goes on in a new one: on SQLite that
        # transaction holds the database's one write lock, which the API's writes wait for.
        self.effects_batch_seconds = EFFECTS_BATCH_SECONDS
        bind = sessionmaker.kw.get("bind")
        # A batch of effects tells a failed job's held writes (given back) from writes it
        # made at once (which fail the batch) by the statements its connection counted.
        self._counted = isinstance(bind, AsyncEngine)
        if isinstance(bind, AsyncEngine):
            held_writes.count_statements(bind)
        self.outcomes = Outcomes(sessionmaker, settings, clock)

    async def run_slot(self, batches: list[list[ClaimedJob]]) -> list[str]:
        """Run one slot's batches in turn, under one heartbeat for every job still held."""
        pending = [job for batch in batches for job in batch]  # the leases the heartbeat keeps
        heartbeat = asyncio.create_task(self._heartbeat(pending))
        try:
            outcomes: list[str] = []
            for batch in batches:
                outcomes.extend(await self._run(batch, pending))
            return outcomes
        except asyncio.CancelledError:
            await self.outcomes.release(pending)
            for job in pending:
                JOBS.labels(job.kind, "released").inc()
            raise
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _run(self, batch: list[ClaimedJob], pending: list[ClaimedJob]) -> list[str]:
        """One batch: together in one transaction when there are several (all of one kind
        of sharing), else, or if that fails, one after another."""
        if len(batch) > 1 and job_sharing(batch[0]) is Sharing.EFFECTS and self._counted:
            return await self._run_effects(batch, pending)
        if len(batch) > 1 and await self._execute_together(batch):
            for job in batch:
                finished(job, "done", pending)
            return ["done"] * len(batch)
        return [await self._run_alone(job, pending) for job in batch]

    async def _run_alone(self, job: ClaimedJob, pending: list[ClaimedJob]) -> str:
        outcome = await self._execute_alone(job)
        finished(job, outcome, pending)
        return outcome

    async def _run_effects(self, batch: list[ClaimedJob], pending: list[ClaimedJob]) -> list[str]:
        """A batch of jobs that act outside the database, in as many transactions as it takes
        to hold none open for much longer than ``effects_batch_seconds``."""
        outcomes: dict[int, str] = {}
        rest = batch
        while len(rest) > 1:
            done, rest = await self._execute_effects(rest)
            for job, outcome in done:
                finished(job, outcome, pending)
                outcomes[job.id] = outcome
        for job in rest:
            outcomes[job.id] = await self._run_alone(job, pending)
        return [outcomes[job.id] for job in batch]

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

    async def _execute_effects(
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
        outcomes: list[tuple[ClaimedJob, str]] = []
        for job in batch:
            if job.id not in kept:
                job_log(job).warning("jobs.completion_refused")
                outcomes.append((job, "lost"))
        for job in ran:
            error = failed.get(job.id)
            outcome = "done" if error is None else await self.outcomes.record_failure(job, error)
            outcomes.append((job, outcome))
        return outcomes, mine[len(ran) :]

    async def _prefetch(self, session: AsyncSession, batch: list[ClaimedJob]) -> dict[str, Any]:
        """Each kind's prefetch over its jobs in ``batch``, by kind."""
        context = PrefetchContext(self.settings, self.clock, self.services)
        return await prefetch(session, ((job.kind, job.payload) for job in batch), context)

    async def _execute_alone(self, job: ClaimedJob) -> str:
        # Alone, all the job's statements are its own: its span holds the prefetch, the
        # commit and the outcome too.
        with job_scope(job):
            try:
                async with self.sessionmaker() as session:
                    # A job alone reads ahead as a batch of one does: the same statements as
                    # its own reads, and its locks taken in the order a batch takes them (a
                    # dispatch's journeys before the appointment and milestone rows it writes).
                    read = await self._prefetch(session, [job])
                    await self._call_handler(session, job, read.get(job.kind))
                    await session.flush()
                    if not await store.complete(session, job):
                        # Our lease ran out and the job was rescued: its effects belong to
                        # the run that holds it now, so ours must not land.
                        await session.rollback()
                        job_log(job).warning("jobs.completion_refused")
                        return "lost"
                    await session.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcome = await self.outcomes.record_failure(job, exc)
                if outcome == "deferred":
                    tracing.annotate(job_outcome=outcome)
                else:
                    tracing.mark_failed(exc, job_outcome=outcome)
                return outcome
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
        with job_scope(job):
            await handler(ctx, job.payload)

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
                log.warning("jobs.lease_lost", job_ids=lost, worker=self.worker_name)
                held[:] = [job for job in held if job.id in renewed]


# The job whose scope is entered, so that entering it again (a job alone: its run, then its
# handler) changes nothing.
_scoped_job: ContextVar[int | None] = ContextVar("careflow_scoped_job", default=None)


@contextlib.contextmanager
def job_scope(job: ClaimedJob) -> Iterator[None]:
    """While ``job`` runs: its request's id on every log line and on the jobs it enqueues,
    and its span (a child of the one that enqueued it) current."""
    if _scoped_job.get() == job.id:
        yield
        return
    tokens = (_scoped_job.set(job.id), request_id_var.set(job.request_id))
    logged = (
        structlog.contextvars.bound_contextvars(request_id=job.request_id)
        if job.request_id is not None
        else contextlib.nullcontext()
    )
    try:
        with (
            logged,
            tracing.job_span(
                job.kind,
                traceparent=job.traceparent,
                attributes={
                    "careflow.job.id": job.id,
                    "careflow.job.kind": job.kind,
                    "careflow.job.attempt": job.attempt,
                    "careflow.organization_id": job.organization_id,
                    "careflow.request_id": job.request_id,
                },
                not_failures=(DeferJob,),
            ),
        ):
            yield
    finally:
        request_id_var.reset(tokens[1])
        _scoped_job.reset(tokens[0])


def job_sharing(job: ClaimedJob) -> Sharing:
    """How ``job`` may share a batch: as its kind says on a first attempt; a job on a later
    attempt runs alone."""
    return sharing_of(job.kind, job.payload) if job.attempt == 1 else Sharing.ALONE


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
