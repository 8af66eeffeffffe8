"""Shared fixtures: a real database, a real SMTP server, a real HTTP Twilio fake, the app
with its client and callers, and ``drain``, which runs the job queue at the frozen clock's
time."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from careflow.app import create_app
from careflow.auth import issue_token
from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.jobs.models import Job, JobStatus
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from careflow.kit.rulesets import clear_all as clear_rulesets
from tests.fixtures.database import (
    count,
    database_settings,
    make_engine,
    reset_schema,
    test_database_url,
    truncate_all,
)
from tests.fixtures.smtp import SmtpServer
from tests.fixtures.twilio import TwilioFake

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256"
T0 = datetime(2025, 2, 15, 10, 0, tzinfo=UTC)

Drain = Callable[..., Awaitable[int]]

CONFORMANCE = "conformance"
# Waits out real minutes on the conformance server (its one-minute delayed email).
CONFORMANCE_LAST = "test_time_based_triggers.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The conformance tests run first, but for the time-based ones, which run last: the
    conformance server's world posts its one-minute delayed email when it is built, so that
    minute passes while the rest of the suite runs (its fixtures live for the session).
    Inside each part, the collected order is kept."""

    def part(item: pytest.Item) -> int:
        if CONFORMANCE not in item.path.parts:
            return 1
        return 2 if item.path.name == CONFORMANCE_LAST else 0

    items.sort(key=part)


@pytest.fixture(scope="session")
def database_url() -> str:
    return test_database_url()


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(database_url)
    await reset_schema(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
def maker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture(autouse=True)
async def _clean_database(request: pytest.FixtureRequest) -> None:
    if "engine" in request.fixturenames:
        await truncate_all(request.getfixturevalue("engine"))
        # Cached rule sets belong to the database just wiped.
        clear_rulesets()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> SmtpServer:
    with smtp_server.sink.lock:
        smtp_server.sink.messages.clear()
        smtp_server.sink.fail_next = 0
        smtp_server.sink.throttle_next = 0
        smtp_server.sink.delay_seconds = 0.0
    return smtp_server


@pytest.fixture(scope="session")
def twilio_server() -> Iterator[TwilioFake]:
    fake = TwilioFake()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def twilio(twilio_server: TwilioFake) -> TwilioFake:
    twilio_server.reset()
    return twilio_server


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "test",
        "database_url": database_url,
        "jwt_secret": TEST_SECRET,
        "log_json": True,
        "job_backoff_base_seconds": 1.0,
    }
    if database_url == os.environ.get("CAREFLOW_TEST_DATABASE_URL"):
        # The test database behind a pooler: careflow is told so, as an operator would.
        values.update(database_settings(database_url))
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str, smtp: SmtpServer) -> Settings:
    return make_settings(database_url, smtp_url=smtp.url)


@pytest.fixture
def twilio_settings(database_url: str, twilio: TwilioFake) -> Settings:
    """Settings that send SMS through the Twilio fake."""
    return make_settings(
        database_url,
        sms_provider="twilio",
        twilio_account_sid="AC123",
        twilio_auth_token="secret-token",
        twilio_from="+15550001111",
        twilio_base_url=twilio.base_url,
    )


@pytest.fixture
def app(settings: Settings, engine: AsyncEngine, clock: FrozenClock) -> FastAPI:
    return create_app(settings, engine=engine, clock=clock, migrate_sqlite=False)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://careflow.test") as c:
        yield c


@pytest.fixture
def token(settings: Settings) -> Callable[..., str]:
    def make(role: str = "admin", org: int = 1, sub: str = "usr_1", **extra: Any) -> str:
        return issue_token(settings, org_id=org, role=role, sub=sub, **extra)

    return make


@pytest.fixture
def auth(token: Callable[..., str]) -> Callable[..., dict[str, str]]:
    """``auth("admin", org=2)`` → headers for that caller."""

    def make(role: str = "admin", org: int = 1, sub: str = "usr_1", **extra: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {token(role, org, sub, **extra)}"}

    return make


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
