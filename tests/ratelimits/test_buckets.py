"""The token bucket statements on the test database: refill by the caller's clock, a take
that gives what the bucket holds, and a provider's refusal that leaves it owing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from careflow.kit.clock import FrozenClock
from careflow.ratelimits import repository
from careflow.ratelimits.models import RateLimitBucket

KEY = "org:1"


async def _take(
    maker: async_sessionmaker[AsyncSession], clock: FrozenClock, want: int, rate: float = 2.0
) -> tuple[int, float]:
    async with maker() as session, session.begin():
        return await repository.take(
            session, KEY, want=want, rate=rate, capacity=max(1.0, rate), now=clock.now().timestamp()
        )


class TestTake:
    async def test_a_new_bucket_starts_full_and_gives_no_more_than_it_holds(
        self, maker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        assert await _take(maker, clock, 5) == (2, 0.0)
        assert await _take(maker, clock, 1) == (0, 0.0)

    async def test_it_refills_by_the_callers_clock_up_to_its_capacity(
        self, maker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        await _take(maker, clock, 2)
        clock.advance(seconds=0.75)  # 1.5 tokens at 2 a second
        assert await _take(maker, clock, 3) == (1, 0.5)
        clock.advance(hours=1)  # long idle: still only a second's worth
        assert await _take(maker, clock, 10) == (2, 0.0)

    async def test_a_clock_behind_the_last_take_refills_nothing(
        self, maker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        await _take(maker, clock, 2)
        behind = FrozenClock(clock.now() - timedelta(seconds=30))
        assert await _take(maker, behind, 1) == (0, 0.0)
        async with maker() as session:
            bucket = await session.get(RateLimitBucket, KEY)
        assert bucket is not None and bucket.updated_at == clock.now().timestamp()

    async def test_a_rate_below_one_a_second_still_holds_one_token(
        self, maker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        assert await _take(maker, clock, 3, rate=0.5) == (1, 0.0)
        clock.advance(seconds=1)
        assert (await _take(maker, clock, 1, rate=0.5))[0] == 0
        clock.advance(seconds=1)
        assert (await _take(maker, clock, 1, rate=0.5))[0] == 1


class TestEmpty:
    async def test_a_refusal_leaves_the_bucket_owing_until_the_time_asked(
        self, maker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        # Owing 3 tokens at 2 a second: the next token is there 2 s from now.
        async with maker() as session, session.begin():
            await repository.empty(
                session, KEY, rate=2.0, capacity=2.0, now=clock.now().timestamp(), tokens=-3.0
            )
        clock.advance(seconds=1.9)
        assert (await _take(maker, clock, 1))[0] == 0
        clock.advance(seconds=0.2)
        assert (await _take(maker, clock, 1))[0] == 1
        async with maker() as session:
            keys = list(await session.scalars(select(RateLimitBucket.key)))
        assert keys == [KEY]

    async def test_emptying_never_adds_tokens(
        self, maker: async_sessionmaker[AsyncSession], clock: FrozenClock
    ) -> None:
        await _take(maker, clock, 2)  # empty already
        async with maker() as session, session.begin():
            await repository.empty(
                session, KEY, rate=2.0, capacity=2.0, now=clock.now().timestamp(), tokens=1.0
            )
        assert (await _take(maker, clock, 1))[0] == 0
