"""Rule-set revisions: read once per transaction, forgotten at its end or on a bump."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.kit.rulesets import NEVER_WRITTEN, bump, current_revision

SCOPE = "automation:patient.onboarded"


class Reads:
    """Counts the revision SELECTs the engine sends."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.seen: Counter[str] = Counter()

    def __enter__(self) -> Reads:
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._on)
        return self

    def __exit__(self, *exc: Any) -> None:
        event.remove(self.engine.sync_engine, "before_cursor_execute", self._on)

    def _on(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM rule_revisions" in statement:
            self.seen["select"] += 1

    @property
    def count(self) -> int:
        return self.seen["select"]


async def test_one_read_per_transaction(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    with Reads(engine) as reads:
        async with sessions() as session, session.begin():
            first = await current_revision(session, 1, SCOPE)
            assert await current_revision(session, 1, SCOPE) == first == NEVER_WRITTEN
            await current_revision(session, 2, SCOPE)  # another organisation: its own read
        assert reads.count == 2
        async with sessions() as session, session.begin():
            await current_revision(session, 1, SCOPE)
        assert reads.count == 3  # a new transaction reads again


async def test_a_bump_is_seen_by_its_own_transaction_and_the_next(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    async with sessions() as session, session.begin():
        before = await current_revision(session, 1, SCOPE)
        await bump(session, 1, SCOPE)
        bumped = await current_revision(session, 1, SCOPE)
        assert bumped != before
    async with sessions() as session, session.begin():
        assert await current_revision(session, 1, SCOPE) == bumped


async def test_a_rolled_back_bump_is_forgotten(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    async with sessions() as session:
        async with session.begin():
            committed = await current_revision(session, 1, SCOPE)
        await session.begin()
        await bump(session, 1, SCOPE)
        assert await current_revision(session, 1, SCOPE) != committed
        await session.rollback()
        async with session.begin():
            assert await current_revision(session, 1, SCOPE) == committed


async def test_a_released_savepoint_keeps_what_the_transaction_read(engine: AsyncEngine) -> None:
    # SQLAlchemy fires after_commit when a savepoint is released; the transaction goes on.
    sessions = create_sessionmaker(engine)
    with Reads(engine) as reads:
        async with sessions() as session, session.begin():
            await current_revision(session, 1, SCOPE)
            async with session.begin_nested():
                await current_revision(session, 1, SCOPE)
            await current_revision(session, 1, SCOPE)
        assert reads.count == 1


async def test_a_rolled_back_savepoint_forgets_a_bump_inside_it(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    async with sessions() as session, session.begin():
        before = await current_revision(session, 1, SCOPE)
        savepoint = await session.begin_nested()
        await bump(session, 1, SCOPE)
        assert await current_revision(session, 1, SCOPE) != before
        await savepoint.rollback()
        assert await current_revision(session, 1, SCOPE) == before
