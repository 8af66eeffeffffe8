"""The SQL of the token buckets: one statement to take, one to empty.

Each is a single ``INSERT … ON CONFLICT (key) DO UPDATE … RETURNING``: a bucket that does
not exist yet starts full, an existing one is refilled by the time elapsed since it was
last used (at the bucket's rate, up to its capacity) and has tokens taken, in one round trip
and under the row's lock, so two workers taking at once each see the other's take. The
time is the caller's clock, bound as a number of seconds; the database's ``now()`` is never
read (a test's frozen clock moves the buckets as it moves everything else).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Double, Integer, String, bindparam
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import BindParameter, ColumnElement, FunctionElement

from careflow import db
from careflow.ratelimits.models import RateLimitBucket


class _greatest(FunctionElement[float]):
    """The larger of two values: ``GREATEST`` on PostgreSQL, the scalar ``max`` on SQLite."""

    type = Double()
    inherit_cache = True


class _least(FunctionElement[float]):
    type = Double()
    inherit_cache = True


class _floor(FunctionElement[int]):
    """The whole part of a value that is not negative."""

    type = Integer()
    inherit_cache = True


@compiles(_greatest)
def _greatest_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return f"GREATEST({compiler.process(element.clauses, **kw)})"


@compiles(_greatest, "sqlite")
def _greatest_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(_least)
def _least_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return f"LEAST({compiler.process(element.clauses, **kw)})"


@compiles(_least, "sqlite")
def _least_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"min({compiler.process(element.clauses, **kw)})"


@compiles(_floor)
def _floor_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(_floor, "sqlite")
def _floor_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    # CAST truncates towards zero: the floor of a value that is not negative.
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"


_table = RateLimitBucket.__table__
_key: BindParameter[str] = bindparam("key", type_=String())
_now: BindParameter[float] = bindparam("now", type_=Double())
_rate: BindParameter[float] = bindparam("rate", type_=Double())
_capacity: BindParameter[float] = bindparam("capacity", type_=Double())
_want: BindParameter[int] = bindparam("want", type_=Integer())
_first_tokens: BindParameter[float] = bindparam("first_tokens", type_=Double())
_first_taken: BindParameter[int] = bindparam("first_taken", type_=Integer())
_tokens_after: BindParameter[float] = bindparam("tokens_after", type_=Double())


def _available() -> ColumnElement[float]:
    """The tokens the stored bucket holds at ``now``: refilled for the time since it was
    last used (none if another worker's clock ran ahead), up to its capacity."""
    elapsed = _greatest(_now - _table.c.updated_at, 0.0)
    return _least(_capacity, _table.c.tokens + elapsed * _rate)


def _build_take(insert: Any) -> Any:
    available = _available()
    granted = _least(_want, _floor(_greatest(available, 0.0)))
    stmt = insert(_table).values(
        key=_key, tokens=_first_tokens, updated_at=_now, taken=_first_taken
    )
    return stmt.on_conflict_do_update(
        index_elements=[_table.c.key],
        set_={
            "tokens": available - granted,
            "updated_at": _greatest(_table.c.updated_at, _now),
            "taken": granted,
        },
    ).returning(_table.c.taken, _table.c.tokens)


def _build_empty(insert: Any) -> Any:
    stmt = insert(_table).values(key=_key, tokens=_tokens_after, updated_at=_now, taken=0)
    return stmt.on_conflict_do_update(
        index_elements=[_table.c.key],
        set_={
            "tokens": _least(_available(), _tokens_after),
            "updated_at": _greatest(_table.c.updated_at, _now),
            "taken": 0,
        },
    )


async def take(
    session: AsyncSession, key: str, *, want: int, rate: float, capacity: float, now: float
) -> tuple[int, float]:
    """Take up to ``want`` tokens from bucket ``key`` at time ``now`` (seconds): how many
    it gave, and the tokens it holds after (below one when it gave fewer than asked)."""
    first = min(want, int(capacity))
    stmt = db.prebuilt(session, "ratelimits.take", _build_take)
    row = (
        await session.execute(
            stmt,
            {
                "key": key,
                "now": now,
                "rate": rate,
                "capacity": capacity,
                "want": want,
                "first_tokens": capacity - first,
                "first_taken": first,
            },
        )
    ).one()
    return int(row[0]), float(row[1])


async def empty(
    session: AsyncSession, key: str, *, rate: float, capacity: float, now: float, tokens: float
) -> None:
    """Leave bucket ``key`` holding at most ``tokens`` at ``now`` (below zero: owing)."""
    stmt = db.prebuilt(session, "ratelimits.empty", _build_empty)
    await session.execute(
        stmt,
        {"key": key, "now": now, "rate": rate, "capacity": capacity, "tokens_after": tokens},
    )
