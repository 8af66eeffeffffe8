"""Fixtures for the job runner: workers that are always stopped, and queue inspection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.jobs.builtin import PROBE_TABLE_DDL
from careflow.jobs.models import Job
from careflow.jobs.queue import enqueue
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from tests.conftest import make_settings

MakeWorker = Callable[..., Worker]


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
async def make_worker(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: FrozenClock,
) -> AsyncIterator[MakeWorker]:
    """``make_worker(name="a", services={...}, **settings_overrides)``; stopped at teardown."""
    made: list[Worker] = []

    def make(
        name: str | None = None,
        services: dict[str, Any] | None = None,
        concurrency: int | None = None,
        **overrides: Any,
    ) -> Worker:
        worker_settings = (
            make_settings(settings.database_url, **overrides) if overrides else settings
        )
        worker = Worker(
            sessionmaker,
            worker_settings,
            clock,
            services=services,
            name=name,
            concurrency=concurrency,
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop(graceful=False)


@pytest.fixture
async def probe_table(engine: AsyncEngine) -> None:
    """The ``job_probe`` table the built-in ``probe`` kind writes to, emptied per test."""
    async with engine.begin() as conn:
        await conn.execute(text(PROBE_TABLE_DDL))
        await conn.execute(text("DELETE FROM job_probe"))


@pytest.fixture
async def effects_table(engine: AsyncEngine) -> None:
    """``test_job_effects``: the rows test handlers write, one per run, emptied per test."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS test_job_effects "
                "(job_id bigint NOT NULL, label text NOT NULL, attempt integer NOT NULL)"
            )
        )
        await conn.execute(text("DELETE FROM test_job_effects"))


async def effects(engine: AsyncEngine) -> list[tuple[int, str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT job_id, label, attempt FROM test_job_effects ORDER BY job_id, attempt")
        )
        return [(row[0], row[1], row[2]) for row in rows.all()]


async def add_job(
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: FrozenClock,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    run_at: datetime | None = None,
    **kwargs: Any,
) -> None:
    async with sessionmaker() as session, session.begin():
        now = clock.now()
        await enqueue(session, kind, payload or {}, run_at=run_at or now, now=now, **kwargs)


async def all_jobs(sessionmaker: async_sessionmaker[AsyncSession]) -> list[Job]:
    async with sessionmaker() as session:
        return list((await session.scalars(select(Job).order_by(Job.id))).all())


async def only_job(sessionmaker: async_sessionmaker[AsyncSession]) -> Job:
    jobs = await all_jobs(sessionmaker)
    assert len(jobs) == 1, jobs
    return jobs[0]


async def eventually(
    condition: Callable[[], Any], *, within: float = 5.0, interval: float = 0.02
) -> None:
    """Poll an (async) condition until it holds; fail after ``within`` seconds."""
    import asyncio
    import inspect

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)
