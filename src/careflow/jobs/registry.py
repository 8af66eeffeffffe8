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

HANDLERS: dict[str, Handler] = {}


def job_handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if kind in HANDLERS and HANDLERS[kind] is not fn:
            raise RuntimeError(f"job kind {kind!r} registered twice")
        HANDLERS[kind] = fn
        return fn

    return register
