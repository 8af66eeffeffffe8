"""What a job's run leaves in the queue when it does not simply commit, and its count.

A failed job's next step (retried after a backoff, deferred, dead) is written in a fresh
transaction, fenced on the lease like every write of a worker: a job another worker took
over meanwhile is refused ("lost") and left to that worker. Interrupted jobs are released
uncounted. Each job's outcome (done, retried, deferred, dead, lost, released) is counted
in ``careflow_jobs_total``. Error texts keep no driver message: it can quote patient data.

Each outcome is logged with its ``reason``: a retry or a deferral at ``warning`` / ``info``,
a dead job at ``error``. The reason is the message of careflow's own job errors (written
from ids, statuses and providers' codes, never from patient data); of any other exception
only its type and where it was raised (``origin``).
"""

from __future__ import annotations

import traceback
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.config import Settings
from careflow.errors import error_origin
from careflow.jobs import store
from careflow.jobs.errors import DeferJob, JobError, PermanentJobError, RetryableJobError
from careflow.jobs.store import ClaimedJob
from careflow.kit.clock import Clock
from careflow.kit.metrics import JOBS

log = structlog.get_logger("careflow.jobs")

MAX_ERROR_CHARS = 4000


class Outcomes:
    """Writes what happens next to jobs that failed or were interrupted."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        clock: Clock,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.clock = clock

    async def record_failure(self, job: ClaimedJob, exc: Exception) -> str:
        """Write what happens next in a fresh transaction (the handler's was rolled back)."""
        log_ = job_log(job)
        now = self.clock.now()
        error = describe(exc)
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
                    delay = self._retry_delay(job, exc)
                    held = await store.requeue(
                        session, job, run_at=now + delay, now=now, error=error
                    )
        except Exception as bookkeeping_exc:
            # The lease will expire and rescue the job; nothing is lost, only delayed.
            log_.error("jobs.failure_not_recorded", error=type(bookkeeping_exc).__name__)
            return "lost"
        if not held:
            log_.warning("jobs.failure_refused", error=type(exc).__name__)
            return "lost"
        fields: dict[str, Any] = {"error": type(exc).__name__, "reason": reason(exc)}
        if not isinstance(exc, JobError):
            fields["origin"] = error_origin(exc)
        if isinstance(exc, DeferJob):
            log_.info("jobs.deferred", until=exc.until.isoformat(), **fields)
        elif outcome == "retried":
            log_.warning(
                "jobs.retried",
                retry_in_seconds=round(delay.total_seconds(), 3),
                attempts_left=job.max_attempts - job.attempt,
                **fields,
            )
        else:
            log_.error("jobs.dead", **fields)
        return outcome

    def _retry_delay(self, job: ClaimedJob, exc: Exception) -> timedelta:
        if isinstance(exc, RetryableJobError) and exc.delay_seconds is not None:
            return timedelta(seconds=exc.delay_seconds)
        base = self.settings.job_backoff_base_seconds
        return timedelta(seconds=store.backoff_seconds(job.attempt, base))

    async def release(self, held: list[ClaimedJob]) -> None:
        """Give interrupted jobs back without counting the attempt: they did not fail."""
        if not held:
            return
        try:
            async with self.sessionmaker() as session, session.begin():
                await store.release_many(session, held, now=self.clock.now())
            log.info("jobs.released", job_ids=[job.id for job in held])
        except Exception as exc:  # the lease expiring will release them instead
            log.error("jobs.release_failed", error=type(exc).__name__)


def finished(job: ClaimedJob, outcome: str, pending: list[ClaimedJob]) -> None:
    if job in pending:  # the heartbeat drops a job whose lease it lost
        pending.remove(job)
    JOBS.labels(job.kind, outcome).inc()


def job_log(job: ClaimedJob) -> Any:
    bound = log.bind(job_id=job.id, kind=job.kind, attempt=job.attempt)
    # The request whose work this is, on lines written outside the job's run too.
    return bound if job.request_id is None else bound.bind(request_id=job.request_id)


def reason(exc: Exception) -> str:
    """Why a job failed, on one line, fit for a log: see the module's docstring."""
    if isinstance(exc, JobError):
        return " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__} (message withheld)"


def describe(exc: Exception) -> str:
    if isinstance(exc, JobError):
        text = f"{type(exc).__name__}: {exc}"
    else:
        # Unexpected failures keep where they happened, not what they said: a driver's
        # message can quote the row's values, and those can be patient data.
        frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
        text = f"{type(exc).__name__} (message withheld)\n{frames}"
    return text[-MAX_ERROR_CHARS:]
