"""Time-based fires at scale (PostgreSQL): claim cost and fire lag, 1k vs 1M pending fires.

    python bench/perf/fires.py --database-url postgresql+asyncpg://…/careflow_bench
                               [--pending 1000,1000000] [--burst 2000] [--workers 2]

For each P in ``--pending``: an empty migrated schema, P pending fires inserted with COPY
(kind ``noop``, status ``queued``, ``run_at`` spread over the next 30 days, a unique
``dedupe_key`` each) and a burst of B ``probe`` jobs due now. Then

(a) the claim: EXPLAIN (ANALYZE, BUFFERS) of the statement ``careflow.jobs.claim.claim_due``
    sends (captured from the real call), and the wall time of 50 claims of 10, each rolled
    back so every claim sees the same table; also the worker's other periodic queries
    (``next_run_at`` and the housekeeping ``depth_by_status``);
(b) fire lag: the burst is deleted, 2 ``careflow worker`` processes start, a fresh burst of B
    ``probe`` jobs due now is committed (with the ``NOTIFY`` careflow's enqueue sends), and
    each probe row's ``recorded_at`` (``clock_timestamp()`` in the handler's transaction, just
    after the claim) minus ``run_at`` is its lag.

The ``public`` schema of the given database is dropped and re-created for each P.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

import asyncpg
from rich.console import Console
from rich.table import Table
from sqlalchemy import event

from benchkit.common import (
    Workdir,
    careflow_cmd,
    careflow_env,
    children,
    is_postgres,
    loadavg,
    percentile,
    plain_pg_dsn,
    reset_database,
)

COLUMNS = [
    "kind",
    "payload",
    "status",
    "run_at",
    "attempts",
    "max_attempts",
    "dedupe_key",
    "created_at",
    "updated_at",
]
PROBE_DDL = (
    "CREATE TABLE IF NOT EXISTS job_probe (job_id bigint PRIMARY KEY, worker text NOT NULL, "
    "attempt integer NOT NULL, recorded_at timestamptz NOT NULL DEFAULT clock_timestamp())"
)
CLAIMS = 50
CLAIM_LIMIT = 10


async def copy_pending(conn: asyncpg.Connection, n: int, now: datetime) -> float:
    rng = random.Random(n)
    horizon = 30 * 24 * 3600
    started = time.monotonic()
    chunk = 100_000
    for start in range(0, n, chunk):
        records = [
            (
                "noop",
                "{}",
                "queued",
                now + timedelta(seconds=rng.uniform(60, horizon)),
                0,
                5,
                f"bench-fire:{i}",
                now,
                now,
            )
            for i in range(start, min(n, start + chunk))
        ]
        await conn.copy_records_to_table("jobs", records=records, columns=COLUMNS)
    return time.monotonic() - started


async def copy_burst(conn: asyncpg.Connection, n: int, run_at: datetime, tag: str) -> None:
    records = [
        ("probe", "{}", "queued", run_at, 0, 5, f"bench-burst:{tag}:{i}", run_at, run_at)
        for i in range(n)
    ]
    await conn.copy_records_to_table("jobs", records=records, columns=COLUMNS)


async def measure_claims(url: str) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the real claim statement, and 50 claims of 10 (rolled back)."""
    from careflow.db import create_engine, create_sessionmaker
    from careflow.jobs import claim, store

    engine = create_engine(url)
    maker = create_sessionmaker(engine)
    captured: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> None:
        captured.append((statement, params))

    lease = timedelta(seconds=30)
    out: dict[str, Any] = {}
    try:
        async with maker() as session:
            event.listen(engine.sync_engine, "before_cursor_execute", capture)
            await claim.claim_due(
                session, worker="bench", now=datetime.now(UTC), lease=lease, limit=CLAIM_LIMIT
            )
            event.remove(engine.sync_engine, "before_cursor_execute", capture)
            await session.rollback()
        statement, params = next((s, p) for s, p in captured if s.lstrip().startswith("UPDATE"))
        out["statement"] = statement
        async with engine.connect() as conn:
            trans = await conn.begin()
            rows = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            plan = [r[0] for r in rows]
            await trans.rollback()
        out["plan"] = plan
        out["explain_ms"] = _ms(plan, "Execution Time")
        out["index_used"] = next(
            (
                m.group(1)
                for line in plan
                if (m := re.search(r"Index (?:Only )?Scan using (\w+)", line))
            ),
            "none (sequential scan)",
        )

        timings = []
        for _ in range(CLAIMS):
            async with maker() as session:
                t = time.perf_counter()
                claimed = await claim.claim_due(
                    session, worker="bench", now=datetime.now(UTC), lease=lease, limit=CLAIM_LIMIT
                )
                timings.append(time.perf_counter() - t)
                await session.rollback()
            assert len(claimed) == CLAIM_LIMIT, f"claimed {len(claimed)}"
        out["claim_wall_ms_mean"] = 1000 * statistics.mean(timings)
        out["claim_wall_ms_p99"] = 1000 * percentile(sorted(timings), 0.99)

        for name, call in (
            ("next_run_at_ms", claim.next_run_at),
            ("depth_ms", store.depth_by_status),
        ):
            times = []
            for _ in range(5):
                async with maker() as session:
                    t = time.perf_counter()
                    await call(session)
                    times.append(time.perf_counter() - t)
            out[name] = 1000 * statistics.median(times)
    finally:
        await engine.dispose()
    return out


def _ms(plan: list[str], label: str) -> float:
    for line in plan:
        if line.strip().startswith(label):
            return float(line.split(":")[1].split()[0])
    return float("nan")


async def wait_workers(logs: list[Any], kids: Any, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        kids.check_alive()
        if all(p.exists() and "jobs.worker_started" in p.read_text() for p in logs):
            await asyncio.sleep(1.0)  # the LISTEN connection comes up just after
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("workers did not start")


async def measure_lag(
    url: str, burst: int, workers: int, workdir: Workdir, tag: str, limit_s: float
) -> dict[str, Any]:
    dsn = plain_pg_dsn(url)
    env = careflow_env(url)
    with children(workdir) as kids:
        names = [f"fires-{tag}-worker{i}" for i in range(workers)]
        for name in names:
            kids.start(name, careflow_cmd("worker"), env)
        await wait_workers([workdir.log(n) for n in names], kids)
        conn = await asyncpg.connect(dsn)
        try:
            load_before = loadavg()
            run_at = datetime.now(UTC)
            async with conn.transaction():
                await copy_burst(conn, burst, run_at, "lag")
                await conn.execute("NOTIFY careflow_jobs")
            deadline = time.monotonic() + limit_s
            done = 0
            while time.monotonic() < deadline:
                kids.check_alive()
                done = await conn.fetchval("SELECT count(*) FROM job_probe")
                if done >= burst:
                    break
                await asyncio.sleep(0.1)
            rows = await conn.fetch(
                "SELECT extract(epoch FROM recorded_at - $1::timestamptz) AS lag FROM job_probe",
                run_at,
            )
            twice = await conn.fetchval("SELECT count(*) FROM job_probe WHERE attempt > 1")
        finally:
            await conn.close()
        load_after = loadavg()
    lags = sorted(float(r["lag"]) for r in rows)
    return {
        "done": len(lags),
        "lag_min_s": lags[0] if lags else float("nan"),
        "lag_p50_s": percentile(lags, 0.50),
        "lag_p99_s": percentile(lags, 0.99),
        "lag_max_s": lags[-1] if lags else float("nan"),
        "burst_jobs_per_s": len(lags) / lags[-1] if lags else float("nan"),
        "second_attempts": int(twice),
        "load": f"{load_before} / {load_after}",
    }


async def phase(
    url: str, pending: int, args: argparse.Namespace, workdir: Workdir
) -> dict[str, Any]:
    conn = await asyncpg.connect(plain_pg_dsn(url))
    try:
        await conn.execute(PROBE_DDL)
        now = datetime.now(UTC)
        copy_s = await copy_pending(conn, pending, now)
        await copy_burst(conn, args.burst, now - timedelta(seconds=1), "claim")
        t = time.monotonic()
        await conn.execute("VACUUM ANALYZE jobs")
        vacuum_s = time.monotonic() - t
    finally:
        await conn.close()
    result: dict[str, Any] = {"pending": pending, "copy_s": copy_s, "vacuum_s": vacuum_s}
    result.update(await measure_claims(url))
    conn = await asyncpg.connect(plain_pg_dsn(url))
    try:
        await conn.execute("DELETE FROM jobs WHERE kind = 'probe'")
        await conn.execute("VACUUM ANALYZE jobs")
    finally:
        await conn.close()
    result.update(
        await measure_lag(url, args.burst, args.workers, workdir, str(pending), args.timeout)
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="postgresql+asyncpg://…")
    parser.add_argument("--pending", default="1000,1000000", help="comma-separated P values")
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0, help="max seconds per burst")
    parser.add_argument("--show-plans", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    if not is_postgres(args.database_url):
        raise SystemExit(
            "perf/fires.py measures PostgreSQL: pass --database-url postgresql+asyncpg://…"
        )

    workdir = Workdir()
    console = Console(width=140)
    results = []
    for p in [int(x) for x in args.pending.split(",")]:
        console.print(
            f"P = {p:,}: inserting, measuring claims, draining a burst of {args.burst:,}…"
        )
        reset_database(args.database_url)
        results.append(asyncio.run(phase(args.database_url, p, args, workdir)))

    table = Table(
        title=f"Time-based fires: claim cost and lag of a {args.burst:,} burst, PostgreSQL"
    )
    table.add_column("measure")
    for r in results:
        table.add_column(f"P = {r['pending']:,}", justify="right")
    rows = [
        ("COPY of P pending fires", lambda r: f"{r['copy_s']:.1f} s"),
        ("claim plan: index used", lambda r: r["index_used"]),
        ("claim EXPLAIN ANALYZE execution", lambda r: f"{r['explain_ms']:.2f} ms"),
        (
            f"claim of {CLAIM_LIMIT}, wall, mean of {CLAIMS}",
            lambda r: f"{r['claim_wall_ms_mean']:.2f} ms",
        ),
        (
            f"claim of {CLAIM_LIMIT}, wall, p99 of {CLAIMS}",
            lambda r: f"{r['claim_wall_ms_p99']:.2f} ms",
        ),
        ("next_run_at (each idle claim loop)", lambda r: f"{r['next_run_at_ms']:.2f} ms"),
        ("depth_by_status (housekeeping, every 10 s)", lambda r: f"{r['depth_ms']:.1f} ms"),
        (f"burst probes done ({args.workers} workers)", lambda r: f"{r['done']:,}"),
        ("fire lag min (first fire: wake-up + claim)", lambda r: f"{r['lag_min_s']:.3f} s"),
        ("fire lag p50", lambda r: f"{r['lag_p50_s']:.2f} s"),
        ("fire lag p99", lambda r: f"{r['lag_p99_s']:.2f} s"),
        ("fire lag max (burst drained)", lambda r: f"{r['lag_max_s']:.2f} s"),
        ("burst jobs/s", lambda r: f"{r['burst_jobs_per_s']:,.0f}"),
        ("probes run twice", lambda r: str(r["second_attempts"])),
        ("load 1m before / after burst", lambda r: r["load"]),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results))
    console.print(table)
    if args.show_plans:
        for r in results:
            console.print(f"\nP = {r['pending']:,}:\n" + "\n".join(r["plan"]), highlight=False)
    console.print(f"claim statement (careflow.jobs.claim.claim_due):\n{results[0]['statement']}")
    console.print(f"logs: {workdir.path}")
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "plan"} for r in results]))


if __name__ == "__main__":
    main()
