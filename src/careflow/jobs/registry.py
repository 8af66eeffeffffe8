"""Job kinds → handlers. Handlers are thin: take ids, call a service; the runner commits."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.config import Settings
from careflow.jobs.prefetch import PREFETCH, Prefetch
from careflow.kit.clock import Clock


@dataclass(slots=True)
class JobContext:
    session: AsyncSession
    sessionmaker: async_sessionmaker[AsyncSession]
    settings: Settings
    clock: Clock
    job_id: int
    kind: str
    attempt: int  # 1 on the first run
    max_attempts: int
    services: dict[str, Any]  # shared clients (SMTP, SMS) the app wires in
    # What the kind's prefetch read for the batch this job runs in (``jobs.prefetch``).
    prefetched: Any = None

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


Handler = Callable[[JobContext, dict[str, Any]], Awaitable[None]]


class Sharing(enum.Enum):
    """Whether a job may run in one transaction with other jobs, and how."""

    ALONE = "alone"
    # Its only effects are writes in its session. Several run in one transaction; if any
    # raises, the whole transaction is rolled back and each job runs again alone.
    ROWS = "rows"
    # It also acts outside the database (an email, an SMS). Several run in one
    # transaction with their writes held (``jobs.held_writes``): one that raises gives back
    # what it held and gets its own outcome, and the others commit without acting twice.
    # One that raises after writing at once, or on a failed statement, fails the batch.
    EFFECTS = "effects"


# A kind's sharing: a Sharing, or a test of the job's payload (``run_action`` shares as ROWS
# for the actions that only write rows, EFFECTS for messages, ALONE for the rest).
SharingRule = Sharing | Callable[[dict[str, Any]], Sharing]


class Priority(enum.IntEnum):
    """How soon a due job runs beside the other due jobs of its organisation: lower first.

    A closed set of levels, so the claim can walk each level of an organisation's queue
    with an index range of its own (``jobs.claim``).
    """

    # Someone is waiting on it now: a time-based reminder firing, a form to open, an
    # ingested event to dispatch.
    URGENT = 0
    NORMAL = 1
    # Work done in bulk that nobody watches job by job: rule reschedules, backfills.
    BULK = 2


# A kind's priority: a Priority, or a test of the job's payload (``run_action`` is urgent
# for a ``require_form`` step and normal for the rest).
PriorityRule = Priority | Callable[[dict[str, Any]], Priority]

HANDLERS: dict[str, Handler] = {}
SHARING: dict[str, SharingRule] = {}
PRIORITY: dict[str, PriorityRule] = {}


def job_handler(
    kind: str,
    *,
    sharing: SharingRule = Sharing.ALONE,
    prefetch: Prefetch | None = None,
    priority: PriorityRule = Priority.NORMAL,
) -> Callable[[Handler], Handler]:
    """Register ``fn`` for ``kind``.

    ``sharing`` says whether the worker may run several jobs of the kind in one transaction
    (one commit instead of one each), and how (``Sharing``). Any job may run twice (a
    rolled-back batch, a rescued lease), so every handler must be idempotent.

    ``prefetch``, for a kind that shares, reads what a batch of its jobs needs in a few
    statements for the whole batch (``jobs.prefetch``); each handler finds the result in
    ``ctx.prefetched`` and reads for itself what it does not find there.

    ``priority`` is the priority a job of the kind gets when its enqueuer names none
    (``Priority``): inside an organisation, due jobs are claimed by priority, then run_at.
    """

    def register(fn: Handler) -> Handler:
        if kind in HANDLERS and HANDLERS[kind] is not fn:
            raise RuntimeError(f"job kind {kind!r} registered twice")
        HANDLERS[kind] = fn
        SHARING[kind] = sharing
        PRIORITY[kind] = priority
        if prefetch is not None:
            PREFETCH[kind] = prefetch
        return fn

    return register


def sharing_of(kind: str, payload: dict[str, Any]) -> Sharing:
    """How a job of ``kind`` with ``payload`` may share a transaction (ALONE if unknown)."""
    rule = SHARING.get(kind, Sharing.ALONE)
    return rule if isinstance(rule, Sharing) else rule(payload)


def priority_of(kind: str, payload: dict[str, Any]) -> Priority:
    """The priority a job of ``kind`` with ``payload`` gets by default (NORMAL if unknown)."""
    rule = PRIORITY.get(kind, Priority.NORMAL)
    return rule if isinstance(rule, Priority) else rule(payload)
