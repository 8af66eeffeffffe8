"""PostgreSQL wake-ups: NOTIFY from another connection wakes a worker polling only every 30 s.

Jobs are inserted through a bare connection, not a Session, so the in-process wake
callback stays silent and only LISTEN/NOTIFY can explain a prompt run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from careflow.jobs.listener import asyncpg_dsn
from careflow.jobs.models import Job, JobStatus
from careflow.jobs.queue import NOTIFY_CHANNEL
from careflow.kit.clock import FrozenClock
from tests.fixtures.database import direct_url
from tests.jobs.conftest import MakeWorker, all_jobs, eventually

Maker = async_sessionmaker[AsyncSession]


@pytest.fixture
def _postgresql_only(engine: AsyncEngine, database_url: str) -> Iterator[None]:
    if engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    if direct_url(database_url) is None:
        pytest.skip("behind a pooler with no listen URL workers poll alone (test_pooler.py)")
    yield


async def insert_and_notify(conn: AsyncConnection, clock: FrozenClock) -> None:
    now = clock.now()
    await conn.execute(
        insert(Job).values(
            kind="noop",
            payload={},
            status=JobStatus.QUEUED,
            run_at=now,
            attempts=0,
            max_attempts=5,
            created_at=now,
            updated_at=now,
        )
    )
    await conn.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))


async def listener_pids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                # Found by name: its last query is a keep-alive ping as often as LISTEN.
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'careflow-listener'"
            )
        )
        return [row.pid for row in rows]


async def _no_jobs(sessionmaker: Maker) -> bool:
    return await all_jobs(sessionmaker) == []


@pytest.mark.usefixtures("_postgresql_only")
class TestListenNotify:
    async def test_notify_wakes_an_idle_worker_within_a_second(
        self, make_worker: MakeWorker, engine: AsyncEngine, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        worker = make_worker(job_poll_interval_seconds=30)
        await worker.start()
        await eventually(lambda: worker.listening and worker.is_idle)

        async with engine.begin() as conn:
            await insert_and_notify(conn, clock)
        await eventually(lambda: _no_jobs(sessionmaker), within=1)

    async def test_listening_resumes_after_the_connection_is_killed(
        self, make_worker: MakeWorker, engine: AsyncEngine, sessionmaker: Maker, clock: FrozenClock
    ) -> None:
        worker = make_worker(job_poll_interval_seconds=30)
        await worker.start()
        await eventually(lambda: worker.listening)
        [old_pid] = await listener_pids(engine)

        async with engine.begin() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})

        async def relistening() -> bool:
            pids = await listener_pids(engine)
            return worker.listening and len(pids) == 1 and pids[0] != old_pid

        await eventually(relistening, within=5)
        await eventually(lambda: worker.is_idle)
        async with engine.begin() as conn:
            await insert_and_notify(conn, clock)
        await eventually(lambda: _no_jobs(sessionmaker), within=1)


def test_dsn_drops_the_sqlalchemy_driver() -> None:
    from sqlalchemy.engine import make_url

    url = make_url("postgresql+asyncpg://user:p%40ss@db.example:5433/careflow")
    assert asyncpg_dsn(url) == "postgresql://user:p%40ss@db.example:5433/careflow"
