"""Claiming due jobs fairly across organisations, urgent work first inside each.

One organisation's backlog must not hold up another's reminders: a claim takes due jobs
from every organisation that has some, in turns, instead of the oldest due jobs overall.
Jobs without an organisation form a group of their own. Inside a group, jobs are taken by
``priority`` (``registry.Priority``), then ``run_at``, then ``id`` (the order they were
made in, for jobs written in one transaction).

A claim, in one transaction:

1. **The groups with due work** (``due_groups``): a loose index scan of
   ``ix_jobs_queued_organization`` (organization_id, priority, run_at, id) over queued jobs
   finds each organisation with queued jobs in one index probe (``min(organization_id) >
   previous``), and a probe per priority level gives its earliest run_at. Its cost is a
   few probes per organisation with queued jobs, whatever their backlogs; reading the
   distinct organisations of the due jobs instead would read every due job, each claim.
   A worker reuses the groups it found for ``GROUPS_FRESH_SECONDS`` while its claims come
   back full, and looks again as soon as one comes back short.
2. **Rounds**: the ``limit`` is shared out evenly, ``ceil(wanted / groups)`` a group,
   and each group gives its share in order of priority, then run_at, then id. A group that
   gave its whole share may have more: the next round shares what is still wanted among those
   alone. So a group alone takes the whole claim in one round (full batches), and with
   one organisation flooding and another with one due job, the one job is in the first
   claim and the flood fills the rest.
3. The claimed jobs are dealt in turns (every group's first job, then every group's
   second, …), each group's by priority then run_at: the worker fills its batches in that
   order, so one organisation's job is not in the claim's last batch behind a flood.
4. The groups are taken in a rotating order (``Rotation``), starting after the group
   that came first last time: when the groups outnumber the jobs wanted (a claim of one),
   each is first in turn.

On PostgreSQL a round is one statement: ``UPDATE … WHERE id = ANY(ARRAY(…))`` of a LATERAL
join over the groups' ids and the priority levels, each an index range of one group and one
level in (run_at, id) order under ``FOR UPDATE SKIP LOCKED``, so concurrent claimers take
different rows and never wait. The nested loop stops at the share, so a lower level is not
read while a higher one fills it. The ids are picked first, then updated through the
primary key: with ``id IN (…)`` PostgreSQL hashed the picked ids and scanned the whole table
for them, dead rows included (a claim of 400 of 30,000 due jobs: ~12 ms, against ~8 ms).
SQLite has one writer at a time: there a round selects each group's ids with plain
statements, then updates them.

Why this shape, measured on PostgreSQL 15 (two cores, heavily loaded, so the times are
high) with 100,000 due jobs of one organisation, one due job of another and 50 more with
1,000 future fires each: reading the distinct organisations of the due jobs (``SELECT
DISTINCT organization_id … WHERE run_at <= now``) took ~200 ms, as it reads every due job;
the loose scan of step 1 took 16 to 19 ms (about 0.3 ms per organisation with queued jobs,
whatever their backlogs); a round claiming 400 jobs 22 to 38 ms. A rotation alone (a cursor of
the organisation served last, one organisation a claim) needs no step 1, but gives the
organisation with one due job its turn only after a whole claim of the flood per worker,
and a claim of one organisation's jobs only: the shared rounds keep every claim full and
put every organisation with due work in each. The cost that grows is step 1's, with the
number of organisations that have queued jobs (due or not).

Time comes from the caller's clock, as everywhere in the queue.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.db import UTCDateTime, dialect_of
from careflow.jobs.models import JobStatus
from careflow.jobs.registry import Priority
from careflow.jobs.store import ClaimedJob, jobs

# How long a worker reuses the groups with due work it found, while its claims come back
# full: finding them costs a statement a claim (a few index probes per organisation with
# queued jobs); reused, a claim under a flood is one statement, and an organisation whose
# work falls due meanwhile waits at most this long for its share. A claim that comes back
# short looks again at once, so nothing due is left while a worker idles.
GROUPS_FRESH_SECONDS = 0.25

# A group of jobs claimed in turns: an organisation's id, or None for jobs of none.
Group = int | None

_LEVELS = ", ".join(str(int(p)) for p in Priority)
_VALUES_LEVELS = ", ".join(f"({int(p)})" for p in Priority)
_QUEUED = f"status = '{JobStatus.QUEUED}'"
_RETURNING = (
    "RETURNING id, kind, payload, attempts, max_attempts, run_at, organization_id, "
    "priority, request_id, traceparent"
)
_SET = (
    f"SET status = '{JobStatus.RUNNING}', attempts = attempts + 1, locked_by = :worker, "
    "lease_expires_at = :lease_until, updated_at = :now"
)

_RETURNED = [
    jobs.c[name]
    for name in (
        "id",
        "kind",
        "payload",
        "attempts",
        "max_attempts",
        "run_at",
        "organization_id",
        "priority",
        "request_id",
        "traceparent",
    )
]


def _typed(sql: str, *binds: Any, returns: bool = True) -> Any:
    """``sql`` with its times bound as ``UTCDateTime`` (SQLite keeps them as text of one
    form) and, for a claim, its RETURNING read as the jobs' columns (JSON, UTC times)."""
    stmt = text(sql).bindparams(
        bindparam("now", type_=UTCDateTime()),
        *binds,
    )
    return stmt.columns(*_RETURNED) if returns else stmt


# Statuses and levels are inlined, not bound: PostgreSQL only uses the partial index when
# the predicate is visible in the plan (``store._status_is``).
_LEVEL_ROWS = " UNION ALL ".join(
    f"SELECT {int(p)} AS level" if i == 0 else f"SELECT {int(p)}" for i, p in enumerate(Priority)
)
# The jobs without an organisation are ordered by the index's leading columns too: an
# equality makes a column constant for PostgreSQL's planner, ``IS NULL`` does not, and with
# ``ORDER BY run_at`` alone it sorted every due job of the group (a sequential scan, ~15 ms
# a claim with 30,000 due) instead of reading the index's first entries (``min(run_at)``
# likewise).
_NULL_GROUP_ORDER = "organization_id, priority, run_at"

# Each group with queued jobs and its earliest run_at: the organisations one index probe
# each (min(organization_id) above the last), then a probe per priority level; and the
# group of jobs without one. Plain SQL that PostgreSQL and SQLite both run.
_GROUP_HEADS = text(
    f"""
WITH RECURSIVE orgs(org) AS (
    SELECT min(organization_id) FROM jobs WHERE {_QUEUED}
  UNION ALL
    SELECT (SELECT min(j.organization_id) FROM jobs j
            WHERE j.{_QUEUED} AND j.organization_id > orgs.org)
    FROM orgs WHERE orgs.org IS NOT NULL
)
SELECT org, min(head) AS head FROM (
    SELECT orgs.org AS org,
           (SELECT min(j.run_at) FROM jobs j WHERE j.{_QUEUED}
            AND j.organization_id = orgs.org AND j.priority = levels.level) AS head
    FROM orgs CROSS JOIN ({_LEVEL_ROWS}) AS levels
    WHERE orgs.org IS NOT NULL
  UNION ALL
    SELECT NULL AS org,
           (SELECT j.run_at FROM jobs j WHERE j.{_QUEUED}
            AND j.organization_id IS NULL AND j.priority = levels.level
            ORDER BY {_NULL_GROUP_ORDER} LIMIT 1) AS head
    FROM ({_LEVEL_ROWS}) AS levels
) AS heads
GROUP BY org
"""
).columns(jobs.c.organization_id.label("org"), jobs.c.run_at.label("head"))

# One round on PostgreSQL for organisations: each group's share, level by level.
_PG_ROUND = _typed(
    f"""
UPDATE jobs {_SET}
WHERE id = ANY(ARRAY(
    SELECT pick.id FROM unnest(:orgs) AS g(org)
    CROSS JOIN LATERAL (
        SELECT due.id FROM (VALUES {_VALUES_LEVELS}) AS l(level)
        CROSS JOIN LATERAL (
            SELECT id FROM jobs
            WHERE {_QUEUED} AND organization_id = g.org AND priority = l.level
            AND run_at <= :now
            ORDER BY run_at, id LIMIT :share FOR UPDATE SKIP LOCKED
        ) AS due
        LIMIT :share
    ) AS pick
    LIMIT :wanted
))
{_RETURNING}
""",
    bindparam("lease_until", type_=UTCDateTime()),
    bindparam("orgs", type_=postgresql.ARRAY(postgresql.INTEGER)),
)

# The group of jobs without an organisation, on PostgreSQL.
_PG_ROUND_NULL = _typed(
    f"""
UPDATE jobs {_SET}
WHERE id = ANY(ARRAY(
    SELECT due.id FROM (VALUES {_VALUES_LEVELS}) AS l(level)
    CROSS JOIN LATERAL (
        SELECT id FROM jobs
        WHERE {_QUEUED} AND organization_id IS NULL AND priority = l.level
        AND run_at <= :now
        ORDER BY {_NULL_GROUP_ORDER}, id LIMIT :share FOR UPDATE SKIP LOCKED
    ) AS due
    LIMIT :share
))
{_RETURNING}
""",
    bindparam("lease_until", type_=UTCDateTime()),
)

_SQLITE_PICK = _typed(
    f"""
SELECT id FROM jobs
WHERE {_QUEUED} AND organization_id = :org AND priority = :level AND run_at <= :now
ORDER BY run_at, id LIMIT :share
""",
    returns=False,
)
_SQLITE_PICK_NULL = _typed(
    f"""
SELECT id FROM jobs
WHERE {_QUEUED} AND organization_id IS NULL AND priority = :level AND run_at <= :now
ORDER BY {_NULL_GROUP_ORDER}, id LIMIT :share
""",
    returns=False,
)


@dataclass(slots=True)
class Rotation:
    """A worker's state between claims: where its next claim starts (after the group that
    came first in its last), and the groups with due work it found last, reused for
    ``GROUPS_FRESH_SECONDS`` while its claims come back full."""

    last: Group = None
    started: bool = False
    groups: list[Group] | None = None
    found_at: float = 0.0

    def known_groups(self) -> list[Group] | None:
        if self.groups is None or time.monotonic() - self.found_at > GROUPS_FRESH_SECONDS:
            return None
        return list(self.groups)

    def found(self, groups: list[Group]) -> None:
        self.groups, self.found_at = list(groups), time.monotonic()

    def forget(self) -> None:
        self.groups = None

    def order(self, groups: list[Group]) -> list[Group]:
        """``groups`` (None first, then ascending ids) starting after ``last``."""
        if not self.started or not groups:
            return groups
        keys = [_key(g) for g in groups]
        after = _key(self.last)
        cut = next((i for i, k in enumerate(keys) if k > after), 0)
        return groups[cut:] + groups[:cut]

    def served(self, group: Group) -> None:
        self.last, self.started = group, True


def _key(group: Group) -> int:
    return -1 if group is None else group


async def group_heads(session: AsyncSession) -> dict[Group, datetime]:
    """Each group with queued jobs (an organisation's id, or None) and its earliest run_at."""
    rows = (await session.execute(_GROUP_HEADS)).all()
    return {row.org: row.head for row in rows if row.head is not None}


async def due_groups(session: AsyncSession, now: datetime) -> list[Group]:
    """The groups with a queued job due at ``now``: None (no organisation) first, then the
    organisations' ids in ascending order."""
    heads = await group_heads(session)
    return sorted((g for g, head in heads.items() if head <= now), key=_key)


async def next_run_at(session: AsyncSession) -> datetime | None:
    """The earliest run_at of any queued job."""
    return min((await group_heads(session)).values(), default=None)


async def claim_due(
    session: AsyncSession,
    *,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    rotation: Rotation | None = None,
) -> list[ClaimedJob]:
    """Claim up to ``limit`` due jobs, shared across the groups with due work (see the
    module's docstring); in the order to run them: the groups in turns, each group's jobs
    by priority, then run_at."""
    rotation = rotation if rotation is not None else Rotation()
    known = rotation.known_groups()
    if known is None:
        known = await due_groups(session, now)
        rotation.found(known)
        reused = False
    else:
        reused = True
    groups = rotation.order(known)
    params = {"worker": worker, "now": now, "lease_until": now + lease}
    claimed: list[ClaimedJob] = []
    first = True
    while len(claimed) < limit:
        if not groups:
            if not reused:
                break
            # The groups found a moment ago gave less than wanted: look again, as a group
            # may have work due since (a new organisation, a fire come due).
            reused = False
            rotation.forget()
            fresh = await due_groups(session, now)
            rotation.found(fresh)
            groups = rotation.order(fresh)
            continue
        wanted = limit - len(claimed)
        share = -(-wanted // len(groups))
        got = await _round(session, groups, share=share, wanted=wanted, params=params)
        if first and got:
            served = {j.organization_id for j in got}
            rotation.served(next(g for g in groups if g in served))
        first = False
        claimed += got
        counts = Counter(j.organization_id for j in got)
        # Only a group that gave its whole share may have more.
        groups = [g for g in groups if counts[g] >= share]
    return _interleaved(claimed)


def _interleaved(claimed: list[ClaimedJob]) -> list[ClaimedJob]:
    """Each group's jobs by priority, then run_at, dealt in turns: every group's first job,
    then every group's second, and so on. The worker fills its batches in this order, so a
    group with one job is in the first batch of the claim, not behind a flood's."""
    claimed.sort(key=lambda j: (j.priority, j.run_at, j.id))
    rank: Counter[Group] = Counter()
    turns = []
    for job in claimed:
        turns.append((rank[job.organization_id], job))
        rank[job.organization_id] += 1
    turns.sort(key=lambda t: t[0])  # stable: priority, then run_at, inside each turn
    return [job for _, job in turns]


async def _round(
    session: AsyncSession,
    groups: list[Group],
    *,
    share: int,
    wanted: int,
    params: dict[str, Any],
) -> list[ClaimedJob]:
    if dialect_of(session) == "postgresql":
        return await _pg_round(session, groups, share=share, wanted=wanted, params=params)
    return await _sqlite_round(session, groups, share=share, wanted=wanted, params=params)


async def _pg_round(
    session: AsyncSession,
    groups: list[Group],
    *,
    share: int,
    wanted: int,
    params: dict[str, Any],
) -> list[ClaimedJob]:
    got: list[ClaimedJob] = []
    orgs = [g for g in groups if g is not None]
    if None in groups:
        rows = await session.execute(_PG_ROUND_NULL, {**params, "share": min(share, wanted)})
        got += _claimed(rows.all(), params["worker"])
    if orgs and len(got) < wanted:
        rows = await session.execute(
            _PG_ROUND, {**params, "orgs": orgs, "share": share, "wanted": wanted - len(got)}
        )
        got += _claimed(rows.all(), params["worker"])
    return got


async def _sqlite_round(
    session: AsyncSession,
    groups: list[Group],
    *,
    share: int,
    wanted: int,
    params: dict[str, Any],
) -> list[ClaimedJob]:
    ids: list[int] = []
    for group in groups:
        take = min(share, wanted - len(ids))
        if take <= 0:
            break
        for level in Priority:
            if take <= 0:
                break
            values = {"org": group, "level": int(level), "now": params["now"], "share": take}
            stmt = _SQLITE_PICK_NULL if group is None else _SQLITE_PICK
            found = (await session.execute(stmt, values)).scalars().all()
            ids += found
            take -= len(found)
    if not ids:
        return []
    placeholders = ", ".join(f":id{i}" for i in range(len(ids)))
    stmt = _typed(
        f"UPDATE jobs {_SET} WHERE id IN ({placeholders}) {_RETURNING}",
        bindparam("lease_until", type_=UTCDateTime()),
    )
    rows = await session.execute(stmt, {**params, **{f"id{i}": v for i, v in enumerate(ids)}})
    return _claimed(rows.all(), params["worker"])


def _claimed(rows: Any, worker: str) -> list[ClaimedJob]:
    return [
        ClaimedJob(
            id=row.id,
            kind=row.kind,
            payload=row.payload or {},
            attempt=row.attempts,
            max_attempts=row.max_attempts,
            run_at=row.run_at,
            organization_id=row.organization_id,
            worker=worker,
            request_id=row.request_id,
            traceparent=row.traceparent,
            priority=row.priority,
        )
        for row in rows
    ]
