"""Job queue throughput: drain N no-op jobs with K ``careflow worker`` processes.

    python bench/perf/queue.py [--database-url URL] [--jobs 20000] [--workers K]
                               [--concurrency 8] [--timeout 90]

Enqueues N ``noop`` jobs in bulk (COPY on PostgreSQL, executemany on SQLite), starts K
worker processes, and measures jobs/s from the first drained job until the table is
empty (or the timeout). Then, in the same run and for the same duration, a pgbench-like
reference: one single-row INSERT per transaction (asyncpg, 8 connections on PostgreSQL;
one sqlite3 connection on SQLite, which serialises writers anyway). A noop job costs one
write transaction of its own (delete + commit) plus its share of a batched claim, so the
ratio is the queue's overhead over the database's bare write rate.

Default database: a fresh temporary SQLite file. On PostgreSQL the ``public`` schema of the
given database is dropped and re-created (never use a database you care about).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from rich.console import Console
from rich.table import Table

from benchkit.common import (
    Children,
    Workdir,
    careflow_cmd,
    careflow_env,
    children,
    describe_db,
    fmt,
    is_postgres,
    loadavg,
    plain_pg_dsn,
    reset_database,
    sqlite_path,
    tree_cpu_seconds,
)

JOB_COLUMNS = (
    "kind",
    "payload",
    "status",
    "run_at",
    "attempts",
    "max_attempts",
    "created_at",
    "updated_at",
)


# -- enqueue in bulk --------------------------------------------------------------------


async def _pg_bulk_enqueue(dsn: str, n: int) -> None:
    import asyncpg

    now = datetime.now(UTC)
    records = [("noop", "{}", "queued", now, 0, 5, now, now) for _ in range(n)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table("jobs", records=records, columns=list(JOB_COLUMNS))
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


def _sqlite_bulk_enqueue(path: str, n: int) -> None:
    stamp = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    rows = [("noop", "{}", "queued", stamp, 0, 5, stamp, stamp) for _ in range(n)]
    conn = sqlite3.connect(path)
    try:
        placeholders = ", ".join("?" for _ in JOB_COLUMNS)
        conn.executemany(
            f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({placeholders})", rows
        )
        conn.commit()
    finally:
        conn.close()


def bulk_enqueue(url: str, n: int) -> None:
    if is_postgres(url):
        asyncio.run(_pg_bulk_enqueue(plain_pg_dsn(url), n))
    else:
        _sqlite_bulk_enqueue(sqlite_path(url), n)


# -- counting ---------------------------------------------------------------------------


class Counter:
    """``SELECT count(*) FROM jobs`` on one long-lived connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.pg = None
        self.lite: sqlite3.Connection | None = None
        if is_postgres(url):
            import asyncpg

            self.pg = self.loop.run_until_complete(asyncpg.connect(plain_pg_dsn(url)))
        else:
            self.lite = sqlite3.connect(sqlite_path(url), timeout=30)

    def remaining(self) -> int:
        if self.pg is not None:
            return int(self.loop.run_until_complete(self.pg.fetchval("SELECT count(*) FROM jobs")))
        assert self.lite is not None
        return int(self.lite.execute("SELECT count(*) FROM jobs").fetchone()[0])

    def close(self) -> None:
        if self.pg is not None:
            self.loop.run_until_complete(self.pg.close())
        if self.lite is not None:
            self.lite.close()
        self.loop.close()


@dataclass
class Drain:
    seconds: float
    done: int
    jobs_per_s: float
    worker_cpu_s: float  # CPU of the worker processes while draining
    drained: int


def measure_drain(url: str, n: int, timeout: float, kids: Children, pids: list[int]) -> Drain:
    """From the first drained job to an empty table (or the timeout)."""
    counter = Counter(url)
    try:
        start_deadline = time.monotonic() + 60
        first_seen: tuple[float, int] | None = None
        while time.monotonic() < start_deadline:
            kids.check_alive()
            left = counter.remaining()
            if left < n:
                first_seen = (time.monotonic(), left)
                cpu0 = sum(tree_cpu_seconds(p) for p in pids)
                break
            time.sleep(0.05)
        if first_seen is None:
            raise TimeoutError("workers drained nothing within 60 s of starting")
        t0, left0 = first_seen
        deadline = t0 + timeout
        left = left0
        while left > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
            left = counter.remaining()
        elapsed = time.monotonic() - t0
        cpu = sum(tree_cpu_seconds(p) for p in pids) - cpu0
        drained = left0 - left
        return Drain(elapsed, n - left, drained / elapsed, cpu, drained)
    finally:
        counter.close()


# -- reference: one single-row INSERT per transaction -----------------------------------

REF_DDL = (
    "CREATE TABLE IF NOT EXISTS bench_ref (id {pk}, kind text NOT NULL, "
    "payload text NOT NULL, created_at {ts} NOT NULL)"
)


async def _pg_reference(dsn: str, seconds: float, connections: int) -> tuple[int, float]:
    import asyncpg

    setup = await asyncpg.connect(dsn)
    await setup.execute("DROP TABLE IF EXISTS bench_ref")
    await setup.execute(REF_DDL.format(pk="bigserial PRIMARY KEY", ts="timestamptz"))
    await setup.close()
    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    count = 0
    deadline = time.monotonic() + seconds

    async def loop(conn: asyncpg.Connection) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            await conn.execute(
                "INSERT INTO bench_ref (kind, payload, created_at) VALUES ($1, $2, now())",
                "noop",
                "{}",
            )
            count += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        elapsed = time.monotonic() - started
        for c in conns:
            await c.close()
    return count, elapsed


def _sqlite_reference(path: str, seconds: float) -> tuple[int, float]:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("DROP TABLE IF EXISTS bench_ref")
        conn.execute(REF_DDL.format(pk="INTEGER PRIMARY KEY", ts="text"))
        count = 0
        started = time.monotonic()
        deadline = started + seconds
        while time.monotonic() < deadline:
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO bench_ref (kind, payload, created_at) VALUES (?, ?, ?)",
                ("noop", "{}", datetime.now(UTC).isoformat()),
            )
            conn.execute("COMMIT")
            count += 1
        return count, time.monotonic() - started
    finally:
        conn.close()


def reference_tps(url: str, seconds: float, connections: int) -> tuple[float, str]:
    if is_postgres(url):
        count, elapsed = asyncio.run(_pg_reference(plain_pg_dsn(url), seconds, connections))
        label = f"asyncpg INSERT, 1 row/txn, {connections} connections"
    else:
        count, elapsed = _sqlite_reference(sqlite_path(url), seconds)
        label = "sqlite3 INSERT, 1 row/txn, 1 connection"
    return count / elapsed, label


# -- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=None, help="default: 2 on PG, 1 on SQLite")
    parser.add_argument("--concurrency", type=int, default=8, help="jobs at once per worker")
    parser.add_argument("--timeout", type=float, default=90.0, help="max seconds of draining")
    parser.add_argument("--ref-connections", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()

    workdir = Workdir()
    url = args.database_url or workdir.sqlite_url()
    workers = args.workers or (2 if is_postgres(url) else 1)
    console = Console()

    reset_database(url)
    t = time.monotonic()
    bulk_enqueue(url, args.jobs)
    enqueue_s = time.monotonic() - t

    env = careflow_env(url, CAREFLOW_LOG_LEVEL="WARNING")
    load_before = loadavg()
    with children(workdir) as kids:
        pids = [
            kids.start(
                f"worker{i}",
                careflow_cmd("worker", "--concurrency", str(args.concurrency)),
                env,
            ).pid
            for i in range(workers)
        ]
        drain = measure_drain(url, args.jobs, args.timeout, kids, pids)
        load_after = loadavg()
        kids.stop_all()

    elapsed, done, jobs_per_s = drain.seconds, drain.done, drain.jobs_per_s
    cpu_ms_per_job = 1000 * drain.worker_cpu_s / max(1, drain.drained)
    ref_seconds = min(30.0, max(5.0, elapsed))
    tps, ref_label = reference_tps(url, ref_seconds, args.ref_connections)

    db = describe_db(url)
    table = Table(title=f"Job queue: {args.jobs:,} noop jobs, {db}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("bulk enqueue (COPY / executemany)", f"{enqueue_s:.2f} s")
    table.add_row("workers x concurrency", f"{workers} x {args.concurrency}")
    table.add_row("jobs drained", f"{done:,} of {args.jobs:,}")
    table.add_row("drain time", f"{elapsed:.2f} s")
    table.add_row("careflow jobs/s", fmt(jobs_per_s))
    table.add_row(f"reference tps ({ref_label}, {ref_seconds:.0f} s)", fmt(tps))
    table.add_row("careflow jobs/s ÷ reference tps", f"{jobs_per_s / tps:.3f}")
    table.add_row("worker CPU per job (all workers)", f"{cpu_ms_per_job:.2f} ms")
    table.add_row("load average (1 min) before / after drain", f"{load_before} / {load_after}")
    console.print(table)
    console.print(f"logs: {workdir.path}")
    if args.json:
        print(
            json.dumps(
                {
                    "bench": "queue",
                    "db": db,
                    "jobs": args.jobs,
                    "workers": workers,
                    "jobs_per_s": jobs_per_s,
                    "reference_tps": tps,
                    "ratio": jobs_per_s / tps,
                    "worker_cpu_ms_per_job": cpu_ms_per_job,
                }
            )
        )


if __name__ == "__main__":
    main()
