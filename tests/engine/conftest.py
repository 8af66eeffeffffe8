"""The engine's test driver: ``drain`` runs the queue at the frozen clock's time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from fastapi import FastAPI

from careflow.config import Settings
from careflow.jobs.models import Job, JobStatus
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from tests.engine.helpers import count

Drain = Callable[..., Awaitable[int]]


@pytest.fixture
def drain(app: FastAPI, settings: Settings, clock: FrozenClock) -> Drain:
    """``await drain()`` runs every job due now; ``drain(until_settled=True)`` also moves the
    clock on five minutes at a time (past retry backoff) until no job is left at all."""

    async def run(
        *, until_settled: bool = False, step_minutes: float = 5, max_steps: int = 50
    ) -> int:
        worker = Worker(app.state.sessionmaker, settings, clock, services=app.state.services)
        ran = await worker.run_until_idle()
        if not until_settled:
            return ran
        for _ in range(max_steps):
            if await count(app.state.engine, Job, Job.status == JobStatus.QUEUED) == 0:
                break
            clock.advance(minutes=step_minutes)
            ran += await worker.run_until_idle()
        return ran

    return run
