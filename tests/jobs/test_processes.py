"""Real ``careflow worker`` OS processes against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.jobs.queue import enqueue
from careflow.kit.clock import SystemClock
from tests.conftest import TEST_SECRET
from tests.fixtures.database import database_env, direct_url
from tests.jobs.conftest import eventually

Maker = async_sessionmaker[AsyncSession]


class WorkerProcesses:
    def __init__(self, database_url: str, directory: Path) -> None:
        self.database_url = database_url
        self.directory = directory
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, concurrency: int = 8, **settings: str) -> subprocess.Popen[bytes]:
        """A ``careflow worker`` process; ``settings``: more of its environment."""
        env = {
            **os.environ,
            "CAREFLOW_DATABASE_URL": self.database_url,
            **database_env(self.database_url),
            "CAREFLOW_ENV": "test",
            "CAREFLOW_JWT_SECRET": TEST_SECRET,
            "CAREFLOW_LOG_LEVEL": "WARNING",
            **settings,
        }
        log = (self.directory / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "careflow.cli", "worker", "--concurrency", str(concurrency)],
            env=env,
            cwd=self.directory,  # away from any .env in the checkout
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def started(self) -> int:
        """How many workers logged their start (at ``CAREFLOW_LOG_LEVEL=INFO``)."""
        logs = self.directory.glob("worker-*.log")
        return sum("jobs.worker_started" in p.read_text() for p in logs)

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.directory.glob("worker-*.log")))

    def terminate_all(self, timeout: float = 20) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(None)
        return codes


@pytest.fixture
def worker_processes(database_url: str, tmp_path: Path) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(database_url, tmp_path)
    yield procs
    for proc in procs.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def count(engine: AsyncEngine, sql: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql))).scalar_one())


async def enqueue_probes(sessionmaker: Maker, n: int) -> None:
    clock = SystemClock()  # the worker processes run on real time
    async with sessionmaker() as session, session.begin():
        now = clock.now()
        for _ in range(n):
            await enqueue(session, "probe", {}, run_at=now, now=now)


async def listening_backends(engine: AsyncEngine) -> int:
    return await count(
        engine,
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )


class TestWorkerProcesses:
    @pytest.mark.usefixtures("probe_table")
    async def test_one_process_drains_the_queue_and_exits_cleanly_on_sigterm(
        self, worker_processes: WorkerProcesses, engine: AsyncEngine, sessionmaker: Maker
    ) -> None:
        worker_processes.spawn()
        await enqueue_probes(sessionmaker, 200)

        async def drained() -> bool:
            return await count(engine, "SELECT count(*) FROM jobs") == 0

        await eventually(drained, within=30, interval=0.1)
        assert await count(engine, "SELECT count(*) FROM job_probe") == 200
        assert worker_processes.terminate_all() == [0], worker_processes.logs()

    @pytest.mark.usefixtures("probe_table")
    async def test_two_processes_lose_nothing_and_run_nothing_twice(
        self, worker_processes: WorkerProcesses, engine: AsyncEngine, sessionmaker: Maker
    ) -> None:
        if engine.dialect.name != "postgresql":
            pytest.skip("concurrent worker processes need PostgreSQL")
        jobs = 2000
        # Polling alone (behind a pooler with no listen URL), a worker finds the jobs on its
        # next poll: both must be running, and polling often, before the jobs come, or the
        # first to start drains them all before the other's first claim.
        polling = direct_url(str(engine.url)) is None
        settings = (
            {"CAREFLOW_LOG_LEVEL": "INFO", "CAREFLOW_JOB_POLL_INTERVAL_SECONDS": "0.05"}
            if polling
            else {}
        )
        worker_processes.spawn(**settings)
        worker_processes.spawn(**settings)

        async def both_ready() -> bool:
            if polling:
                return worker_processes.started() == 2
            return await listening_backends(engine) == 2

        await eventually(both_ready, within=20, interval=0.1)
        await enqueue_probes(sessionmaker, jobs)

        async def drained() -> bool:
            return await count(engine, "SELECT count(*) FROM jobs") == 0

        await eventually(drained, within=50, interval=0.1)
        # job_probe's primary key makes a second run of any job fail and retry, so one row
        # per job, every one at attempt 1, means each job ran exactly once.
        assert await count(engine, "SELECT count(*) FROM job_probe") == jobs
        assert await count(engine, "SELECT count(*) FROM job_probe WHERE attempt <> 1") == 0
        assert await count(engine, "SELECT count(DISTINCT worker) FROM job_probe") == 2
        assert worker_processes.terminate_all() == [0, 0], worker_processes.logs()
