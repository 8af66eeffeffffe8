"""A pooled PostgreSQL connection the server has ended is found on checkout and replaced.

The ping is ``careflow.db``'s checkout listener: ``SELECT 1`` on a connection the pool kept,
none on one it has just made (that connection's first statement is its test).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_engine
from tests.fixtures.database import direct_url


@pytest.fixture
async def one_connection_engine(engine: AsyncEngine) -> AsyncIterator[AsyncEngine]:
    if engine.dialect.name != "postgresql":
        pytest.skip("the checkout ping is PostgreSQL's")
    # The ping's contract is with PostgreSQL's own sessions: behind a pooler, the tests
    # hold one on the direct URL (a pooler's client connection has no backend pid).
    url = direct_url(engine.url.render_as_string(hide_password=False))
    if url is None:
        pytest.skip("a server session's pid needs a direct connection (no listen URL set)")
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


async def last_query(engine: AsyncEngine, pid: int) -> str:
    async with engine.connect() as conn:
        sql = text("SELECT query FROM pg_stat_activity WHERE pid = :pid")
        return str((await conn.execute(sql, {"pid": pid})).scalar_one())


async def test_a_kept_connection_is_pinged_and_a_new_one_is_not(
    engine: AsyncEngine, one_connection_engine: AsyncEngine
) -> None:
    # get_server_pid() asks the driver, not the server: the last query stays the pool's.
    fresh = await one_connection_engine.raw_connection()
    pid = fresh.driver_connection.get_server_pid()
    assert await last_query(engine, pid) != "SELECT 1"
    fresh.close()

    kept = await one_connection_engine.raw_connection()
    assert kept.driver_connection.get_server_pid() == pid
    assert await last_query(engine, pid) == "SELECT 1"
    kept.close()


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
    # Through a pooler the next statement would just get another server connection.
    url = direct_url(engine.url.render_as_string(hide_password=False))
    if url is None:
        pytest.skip("a server session's end needs a direct connection (no listen URL set)")
    unpinged = create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=False)
    try:
        pid = await backend_pid(unpinged)
        await terminate(engine, pid)
        with pytest.raises(DBAPIError):
            await backend_pid(unpinged)
    finally:
        await unpinged.dispose()
