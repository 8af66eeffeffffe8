from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from careflow.db import create_engine, create_sessionmaker
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from careflow.migrate import upgrade_head
from tests.conftest import make_settings
from tests.jobs.conftest import add_job, all_jobs, eventually


class TestDatabaseOutage:
    async def test_worker_waits_out_an_unreachable_database_then_runs_jobs(
        self, tmp_path: Path, clock: FrozenClock
    ) -> None:
        # A SQLite file in a directory that does not exist yet cannot be opened: the
        # database is "down" until the test creates the directory.
        url = f"sqlite+aiosqlite:///{tmp_path / 'later' / 'careflow.db'}"
        engine = create_engine(url)
        sessionmaker = create_sessionmaker(engine)
        worker = Worker(sessionmaker, make_settings(url, job_poll_interval_seconds=30), clock)
        try:
            with capture_logs() as logs:
                await worker.start()
                await eventually(lambda: any(e["event"] == "jobs.claim_failed" for e in logs))

            (tmp_path / "later").mkdir()
            await upgrade_head(engine)
            await add_job(sessionmaker, clock, "noop")

            async def drained() -> bool:
                return await all_jobs(sessionmaker) == []

            await eventually(drained, within=10)
        finally:
            await worker.stop()
            await engine.dispose()

