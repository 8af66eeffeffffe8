"""Exact ``meta.total`` of the big lists on PostgreSQL without counting their rows.

Why: ``count(*)`` reads every matching index entry. With 5 million executions in one
organisation that is 0.7 to 2.4 s on a two-core machine (``bench/perf/lists.py``), and 0.3 to 0.7 s
for a million messages, episodes or audit entries: each first page must answer in 200 ms.

How: PostgreSQL statement triggers (migration 0014) write, for every INSERT, UPDATE and
DELETE of ``executions``, ``messages``, ``episodes`` and ``audit_log``, the change in the
number of rows per (organisation, list, UTC day, the list's filter columns) into
``list_count_deltas``, in the writing transaction, so a count is exact as soon as the write
commits, and a rolled-back write leaves none. The triggers only INSERT: concurrent writers
never wait for each other on a shared counter row. ``compact`` (the workers' housekeeping)
moves the deltas into ``list_counts``, one row per key, in one statement; a reader sums both
tables in one statement, so it never sees a delta twice or not at all.

A list's total is then a sum over its rows of ``list_counts`` for the days wholly inside the
time filter, plus ``count(*)`` of the rows in the partial days at the filter's two ends (at
most a day each, read from the list's index on the time column). A filter that is not one of
the kept columns (a patient, an execution, an audited object's id) selects few rows and is
counted directly; so is every list on SQLite (no triggers; one process, small tables).

The cost on the write path is one trigger call per statement and one small INSERT when the
counts move; ``docs/benchmarks.md`` ("Lists at scale") has it measured end to end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import BigInteger, Date, Index, Integer, String, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql import ColumnElement

from careflow.db import Base, BigIntPK

KEYS = ("k1", "k2", "k3", "k4", "k5")


class ListCount(Base):
    """How many rows of one list share one organisation, UTC day and key (compacted)."""

    __tablename__ = "list_counts"

    organization_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    list: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    # The list's filter columns in ``CountedList.keys`` order, as text; '' for NULL or unused.
    k1: Mapped[str] = mapped_column(String(200), primary_key=True)
    k2: Mapped[str] = mapped_column(String(200), primary_key=True)
    k3: Mapped[str] = mapped_column(String(200), primary_key=True)
    k4: Mapped[str] = mapped_column(String(200), primary_key=True)
    k5: Mapped[str] = mapped_column(String(200), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)


class ListCountDelta(Base):
    """A change in ``list_counts`` written by a trigger, until ``compact`` folds it in."""

    __tablename__ = "list_count_deltas"
    __table_args__ = (Index("ix_list_count_deltas_org_list", "organization_id", "list"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[int] = mapped_column(Integer, nullable=False)
    list: Mapped[str] = mapped_column(String(16), nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    k1: Mapped[str] = mapped_column(String(200), nullable=False)
    k2: Mapped[str] = mapped_column(String(200), nullable=False)
    k3: Mapped[str] = mapped_column(String(200), nullable=False)
    k4: Mapped[str] = mapped_column(String(200), nullable=False)
    k5: Mapped[str] = mapped_column(String(200), nullable=False)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)


@dataclass(frozen=True, slots=True)
class CountedList:
    """A list whose counts are kept: its name and its filter columns, k1 onwards."""

    name: str
    keys: tuple[str, ...]


EXECUTIONS = CountedList("executions", ("automation_rule_id", "status", "trigger_event"))
MESSAGES = CountedList("messages", ("channel", "status"))
EPISODES = CountedList(
    "episodes",
    (
        "journey_type",
        "status",
        "inbox_visibility",
        "suggested_assignment",
        "suggested_priority",
    ),
)
AUDIT_LOG = CountedList("audit_log", ("object_type", "actor_sub"))

CountWhere = Callable[[Sequence[ColumnElement[bool]]], Awaitable[int]]


def _kept(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _floor_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _ceil_day(moment: datetime) -> date:
    day = _floor_day(moment)
    return day if _day_start(day) == moment else day + timedelta(days=1)


async def total(
    session: AsyncSession,
    counted: CountedList,
    organization_id: int,
    keys: Mapping[str, Any],
    *,
    count_where: CountWhere,
    time_column: Any = None,
    lower: datetime | None = None,
    upper: datetime | None = None,
    others: bool = False,
) -> int:
    """How many rows of the list match: the organisation, ``keys`` (filter column → value,
    each one of ``counted.keys``), and a time filter whose bounds are ``lower`` (inclusive)
    and ``upper`` (inclusive or exclusive: the caller's own conditions decide).

    ``count_where(extra)`` counts the rows matching the caller's whole filter and ``extra``:
    the partial days at the time filter's ends, or everything when counts are not kept.
    ``others``: the filter has a condition beyond ``keys`` and time; it is counted directly.
    """
    if others or not _kept(session):
        return await count_where([])
    lo = _ceil_day(lower) if lower is not None else None
    hi = _floor_day(upper) if upper is not None else None
    if lo is not None and hi is not None and lo >= hi:
        return await count_where([])  # no whole day inside: at most two days of rows
    n = await _kept_sum(session, counted, organization_id, keys, lo, hi)
    if time_column is not None and lo is not None:
        n += await count_where([time_column < _day_start(lo)])
    if time_column is not None and hi is not None:
        n += await count_where([time_column >= _day_start(hi)])
    return n


async def _kept_sum(
    session: AsyncSession,
    counted: CountedList,
    organization_id: int,
    keys: Mapping[str, Any],
    lo: date | None,
    hi: date | None,
) -> int:
    where = ["organization_id = :org", "list = :list"]
    params: dict[str, Any] = {"org": organization_id, "list": counted.name}
    for column, key in zip(counted.keys, KEYS, strict=False):
        if keys.get(column) is not None:
            where.append(f"{key} = :{key}")
            params[key] = str(keys[column])
    if lo is not None:
        where.append("day >= :lo")
        params["lo"] = lo
    if hi is not None:
        where.append("day < :hi")
        params["hi"] = hi
    condition = " AND ".join(where)
    sql = (
        f"SELECT coalesce(sum(n), 0) FROM (SELECT n FROM list_counts WHERE {condition}"
        f" UNION ALL SELECT n FROM list_count_deltas WHERE {condition}) AS kept"
    )
    return int(await session.scalar(text(sql), params) or 0)


# Every delta, folded into its key's count in one statement (a concurrent compaction waits
# for this one's deleted rows and then finds them gone).
_COMPACT = text(
    """
    WITH moved AS (
        DELETE FROM list_count_deltas
        RETURNING organization_id, list, day, k1, k2, k3, k4, k5, n
    ), summed AS (
        SELECT organization_id, list, day, k1, k2, k3, k4, k5, sum(n) AS n
        FROM moved GROUP BY organization_id, list, day, k1, k2, k3, k4, k5
    )
    INSERT INTO list_counts AS c (organization_id, list, day, k1, k2, k3, k4, k5, n)
    SELECT * FROM summed WHERE n <> 0
    ON CONFLICT (organization_id, list, day, k1, k2, k3, k4, k5)
    DO UPDATE SET n = c.n + excluded.n
    """
)


async def compact(session: AsyncSession) -> None:
    """Fold the deltas into ``list_counts`` (PostgreSQL; nothing on SQLite)."""
    if not _kept(session):
        return
    await session.execute(_COMPACT)
