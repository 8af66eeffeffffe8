"""Operational settings reach the queue and the database connections."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.app import create_app
from careflow.db import create_sessionmaker
from careflow.jobs.models import Job
from careflow.jobs.queue import DEFAULT_MAX_ATTEMPTS, set_default_max_attempts
from careflow.kit.clock import FrozenClock
from tests.conftest import make_settings
from tests.fixtures.database import behind_pooler

Auth = Callable[..., dict[str, str]]


class TestMaxAttemptsSetting:
    async def test_jobs_get_the_configured_attempts(
        self, engine: AsyncEngine, database_url: str, clock: FrozenClock, auth: Auth
    ) -> None:
        app = create_app(
            make_settings(database_url, job_max_attempts=9),
            engine=engine,
            clock=clock,
            migrate_sqlite=False,
        )
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.post(
                    "/v1/events",
                    json={"type": "patient.onboarded", "data": {"patient": {"id": 1}}},
                    headers=auth("service"),
                )
                assert r.status_code == 202, r.text
            async with create_sessionmaker(engine)() as session:
                job = await session.scalar(select(Job))
            assert job is not None and job.max_attempts == 9
        finally:
            set_default_max_attempts(DEFAULT_MAX_ATTEMPTS)

    def test_zero_attempts_is_refused(self) -> None:
        with pytest.raises(ValueError):
            set_default_max_attempts(0)


class TestPostgresSessionSettings:
    async def test_connections_are_named(self, engine: AsyncEngine) -> None:
        if engine.dialect.name != "postgresql":
            pytest.skip("PostgreSQL session settings")
        async with engine.connect() as conn:
            name = (await conn.execute(text("SHOW application_name"))).scalar_one()
        assert name == "careflow"

    async def test_connections_cannot_idle_in_a_transaction(self, engine: AsyncEngine) -> None:
        if engine.dialect.name != "postgresql":
            pytest.skip("PostgreSQL session settings")
        if behind_pooler(engine.url.render_as_string(hide_password=False)):
            pytest.skip(
                "behind a pooler the timeout is the role's setting (ALTER ROLE … SET), "
                "not careflow's: a pooler refuses it as a startup parameter"
            )
        async with engine.connect() as conn:
            idle = (
                await conn.execute(text("SHOW idle_in_transaction_session_timeout"))
            ).scalar_one()
        assert idle == "2min"
