"""Job kinds → handlers. Handlers are thin: take ids, call a service; the runner commits."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.config import Settings
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
    # What the kind's ``read_ahead`` read for the whole batch this job runs in, else None.
    read_ahead: Any = None

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
    # transaction with their writes held (``kit.write_behind``): one that raises gives back
    # what it held and gets its own outcome, and the others commit without acting twice.
    # One that raises after writing at once, or on a failed statement, fails the batch.
    EFFECTS = "effects"


# A kind's sharing: a Sharing, True (ROWS), False (ALONE), or a test of the job's payload
# (``run_action`` shares as ROWS for the actions that only write rows, EFFECTS for messages).
Batchable = bool | Sharing | Callable[[dict[str, Any]], "bool | Sharing"]
# Reads for a whole batch of one kind's jobs, done once before any of them runs.
ReadAhead = Callable[[AsyncSession, Sequence[dict[str, Any]]], Awaitable[Any]]

HANDLERS: dict[str, Handler] = {}
BATCHABLE: dict[str, Batchable] = {}
READ_AHEAD: dict[str, ReadAhead] = {}


def job_handler(
    kind: str, *, batchable: Batchable = False, read_ahead: ReadAhead | None = None
) -> Callable[[Handler], Handler]:
    """Register ``fn`` for ``kind``.

    ``batchable`` says whether the worker may run several jobs of the kind in one
    transaction (one commit instead of one each), and how (``Sharing``). Any job may run
    twice (a rolled-back batch, a rescued lease), so every handler must be idempotent.

    ``read_ahead``, for a kind that shares, reads what a batch of its jobs needs in a few
    statements for the whole batch; each handler finds the result in ``ctx.read_ahead``
    (None when the job runs alone) and reads for itself what it does not find there.
    """

    def register(fn: Handler) -> Handler:
        if kind in HANDLERS and HANDLERS[kind] is not fn:
            raise RuntimeError(f"job kind {kind!r} registered twice")
        HANDLERS[kind] = fn
        BATCHABLE[kind] = batchable
        if read_ahead is not None:
            READ_AHEAD[kind] = read_ahead
        return fn

    return register


def sharing(kind: str, payload: dict[str, Any]) -> Sharing:
    rule = BATCHABLE.get(kind, False)
    value = rule(payload) if callable(rule) else rule
    if isinstance(value, Sharing):
        return value
    return Sharing.ROWS if value else Sharing.ALONE


def is_batchable(kind: str, payload: dict[str, Any]) -> bool:
    """Whether the kind's jobs only write rows (``Sharing.ROWS``)."""
    return sharing(kind, payload) is Sharing.ROWS
