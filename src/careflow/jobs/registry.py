"""Job kinds → handlers. Handlers are thin: take ids, call a service; the runner commits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


Handler = Callable[[JobContext, dict[str, Any]], Awaitable[None]]
# Whether one job of a kind may share a transaction with others: True, False, or a test of
# the job's payload (``run_action`` is batchable for the actions that only write rows).
Batchable = bool | Callable[[dict[str, Any]], bool]

HANDLERS: dict[str, Handler] = {}
BATCHABLE: dict[str, Batchable] = {}


def job_handler(kind: str, *, batchable: Batchable = False) -> Callable[[Handler], Handler]:
    """Register ``fn`` for ``kind``.

    ``batchable`` promises that the handler's only effects are writes in its session: no
    email, no HTTP call, nothing outside the database. The worker may then run several such
    jobs in one transaction (one commit instead of one each). If any of them raises, the
    whole transaction is rolled back and each job runs again alone, so a batchable handler
    must be safe to run twice, as every handler must be.
    """

    def register(fn: Handler) -> Handler:
        if kind in HANDLERS and HANDLERS[kind] is not fn:
            raise RuntimeError(f"job kind {kind!r} registered twice")
        HANDLERS[kind] = fn
        BATCHABLE[kind] = batchable
        return fn

    return register


def is_batchable(kind: str, payload: dict[str, Any]) -> bool:
    rule = BATCHABLE.get(kind, False)
    return rule(payload) if callable(rule) else rule
