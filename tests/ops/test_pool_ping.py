"""A pooled PostgreSQL connection the server has ended is found on checkout and replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_engine


@pytest.fixture
async def one_connection_engine(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    if engine.dialect.name != "postgresql":
        pytest.skip("the checkout ping is PostgreSQL's")
    url = engine.url.render_as_string(hide_password=False)
    pooled = create_engine(url, pool_size=1, max_overflow=0)
    yield pooled
    await pooled.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(engine: AsyncEngine, pid: int) -> None:
    async with engine.connect() as conn:
        ended = await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert ended.scalar_one() is True


async def test_a_terminated_connection_is_replaced_on_checkout(
    engine: AsyncEngine, one_connection_engine: AsyncEngine
) -> None:
    first = await backend_pid(one_connection_engine)
    assert await backend_pid(one_connection_engine) == first  # the pool keeps it

    await terminate(engine, first)

    # The next checkout finds it dead before any statement of ours runs on it.
    second = await backend_pid(one_connection_engine)
    assert second != first
    assert await backend_pid(one_connection_engine) == second


async def test_without_the_ping_the_dead_connection_fails_the_statement(
    engine: AsyncEngine,
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the checkout ping is PostgreSQL's")
    url = engine.url.render_as_string(hide_password=False)
    unpinged = create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    try:
        pid = await backend_pid(unpinged)
        await terminate(engine, pid)
        with pytest.raises(DBAPIError):
            await backend_pid(unpinged)
    finally:
        await unpinged.dispose()
