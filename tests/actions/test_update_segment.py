from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.actions.base import PermanentActionError
from careflow.actions.registry import EXECUTORS
from careflow.kit.clock import FrozenClock
from careflow.segments.models import SegmentMember
from tests.actions.conftest import ContextFor
from tests.fixtures.factories import create_execution

executor = EXECUTORS["update_segment"]


async def members(session: AsyncSession) -> list[tuple[int, int, Any]]:
    rows = await session.execute(
        select(SegmentMember.organization_id, SegmentMember.segment_id, SegmentMember.patient_id)
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


class TestUpdateSegment:
    async def test_add_then_remove_is_idempotent(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            async def run(action: str) -> dict[str, Any]:
                config = {"type": "update_segment", "segment_id": 7, "action": action}
                ctx = context_for(session, execution, config)
                outcome = await executor.execute(ctx)
                assert outcome.status == "success"
                return outcome.result

            assert await run("add") == {"segment_id": 7, "membership": "added"}
            assert await run("add") == {"segment_id": 7, "membership": "unchanged"}
            assert await members(session) == [(1, 7, 100)]
            assert await run("remove") == {"segment_id": 7, "membership": "removed"}
            assert await run("remove") == {"segment_id": 7, "membership": "unchanged"}
            assert await members(session) == []

    async def test_membership_is_per_organisation(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            config = {"type": "update_segment", "segment_id": 7, "action": "add"}
            for org in (1, 2):
                execution = await create_execution(session, org=org, now=clock.now())
                outcome = await executor.execute(context_for(session, execution, config))
                assert outcome.result["membership"] == "added"
            assert sorted(await members(session)) == [(1, 7, 100), (2, 7, 100)]

    async def test_no_patient_is_skipped(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, patient_id=None, now=clock.now())
            config = {"type": "update_segment", "segment_id": 7, "action": "add"}
            outcome = await executor.execute(context_for(session, execution, config))
            assert (outcome.status, outcome.reason) == ("skipped", "no patient")

    async def test_a_bad_action_is_permanent(
        self,
        maker: async_sessionmaker[AsyncSession],
        clock: FrozenClock,
        context_for: ContextFor,
    ) -> None:
        async with maker() as session:
            execution = await create_execution(session, now=clock.now())
            config = {"type": "update_segment", "segment_id": 7, "action": "toggle"}
            ctx = context_for(session, execution, config)
            with pytest.raises(PermanentActionError):
                await executor.execute(ctx)

    async def test_preview(self, maker: async_sessionmaker[AsyncSession]) -> None:
        async with maker() as session:
            config = {"type": "update_segment", "segment_id": 7, "action": "remove"}
            assert await executor.preview(session, 1, config, {}) == {
                "segment_id": 7,
                "action": "remove",
            }
