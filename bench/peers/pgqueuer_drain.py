"""careflow's job queue beside pgqueuer: no-op jobs drained by K processes on PostgreSQL.

    python bench/peers/pgqueuer_drain.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/careflow_bench
                                         [--jobs 10000] [--workers 2] [--peer-only] [--json]

pgqueuer 1.6.0 is installed into its own environment (``bench/.peers``) and works in its
own database (``<name>_peers``, reset each run). careflow's figure comes from
``bench/perf/queue.py`` run in the same invocation with the same job count and workers.
pgqueuer dequeues as many jobs at a time as careflow's default batch (``PEER_BATCH``). Both are
timed the same way: from the first job gone to an empty table (pgqueuer's figure
counting its processes' start-up is shown too). ``--peer-only`` measures pgqueuer alone;
``bench/compare.py`` runs it so, with ``--json``, beside its own run of ``perf/queue.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

import asyncpg
from rich.console import Console
from rich.table import Table

from benchkit.common import (
    REFUSED_DATABASES,
    Workdir,
    children,
    peer_python,
    plain_pg_dsn,
    run_json_script,
)
from careflow.config import Settings

PEER_SETUP = """
import asyncio, sys, asyncpg
from pgqueuer import Queries, AsyncpgDriver
async def main(dsn, n):
    conn = await asyncpg.connect(dsn)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    for start in range(0, n, 1000):
        size = min(1000, n - start)
        await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
    # As perf/queue.py does after its COPY: without statistics the planner picks plans
    # that make the drain several times slower at 50,000 jobs.
    await conn.execute("ANALYZE pgqueuer")
    await conn.close()
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

PEER_WORKER = """
import asyncio, sys, asyncpg
from datetime import timedelta
from pgqueuer import QueueManager, Queries, AsyncpgDriver
from pgqueuer.types import QueueExecutionMode
async def main(dsn, batch_size):
    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    @qm.entrypoint("noop")
    async def noop(job):
        return None
    await qm.run(
        mode=QueueExecutionMode.drain, batch_size=batch_size, dequeue_timeout=timedelta(seconds=1)
    )
    await conn.close()
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def peers_database(database_url: str) -> str:
    """A fresh ``<name>_peers`` database beside careflow's bench database; its plain DSN."""
    server, name = plain_pg_dsn(database_url).rsplit("/", 1)
    name = name.split("?", 1)[0]
    peers = f"{name}_peers"
    if name in REFUSED_DATABASES or peers in REFUSED_DATABASES:
        raise SystemExit(f"refusing to reset database {peers!r}: use a bench database")
    asyncio.run(_recreate_database(f"{server}/postgres", peers))
    return f"{server}/{peers}"


async def _recreate_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _watch_drain(dsn: str, jobs: int, procs: list[Any], limit_s: float) -> dict[str, float]:
    """Time the drain as ``perf/queue.py`` times careflow's: first job gone → table empty."""
    conn = await asyncpg.connect(dsn)
    try:
        launched = time.monotonic()
        deadline = launched + limit_s
        first: tuple[float, int] | None = None
        left = jobs
        while left > 0 and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError("a pgqueuer worker failed")
            await asyncio.sleep(0.02)
            left = int(await conn.fetchval("SELECT count(*) FROM pgqueuer"))
            if first is None and left < jobs:
                first = (time.monotonic(), left)
        ended = time.monotonic()
    finally:
        await conn.close()
    if first is None or left > 0:
        raise RuntimeError(f"pgqueuer left {left} of {jobs} jobs after {limit_s:.0f} s")
    drain_s = ended - first[0]
    return {
        "jobs_per_s": first[1] / drain_s,
        "jobs_per_s_with_startup": jobs / (ended - launched),
        "drain_seconds": drain_s,
    }


# pgqueuer dequeues as many jobs at a time as careflow's default batch: like for like.
PEER_BATCH = Settings.model_fields["worker_batch_size"].default


def pgqueuer_drain(
    dsn: str, jobs: int, workers: int, timeout: float = 300.0, batch_size: int = PEER_BATCH
) -> dict[str, float]:
    """``workers`` pgqueuer processes draining ``jobs`` no-op jobs, ``batch_size`` a dequeue:
    jobs/s, and with start-up."""
    python = str(peer_python("pgqueuer"))
    subprocess.run([python, "-c", PEER_SETUP, dsn, str(jobs)], check=True, timeout=300)
    workdir = Workdir()
    with children(workdir) as kids:
        procs = [
            kids.start(
                f"pgqueuer{i}", [python, "-c", PEER_WORKER, dsn, str(batch_size)], dict(os.environ)
            )
            for i in range(workers)
        ]
        try:
            return asyncio.run(_watch_drain(dsn, jobs, procs, timeout))
        except RuntimeError as error:
            raise RuntimeError(f"{error}: logs in {workdir.path}") from None


def careflow_drain(database_url: str, jobs: int, workers: int) -> dict[str, Any]:
    """``bench/perf/queue.py --json``'s result: careflow's workers draining no-op jobs."""
    return run_json_script(
        "perf/queue.py",
        *("--database-url", database_url),
        *("--jobs", str(jobs)),
        *("--workers", str(workers)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", required=True, help="careflow's PostgreSQL bench database"
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--peer-only", action="store_true", help="pgqueuer alone, without careflow's drain"
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    peer_python("pgqueuer")
    peers_dsn = peers_database(args.database_url)

    ours = None
    if not args.peer_only:
        ours = careflow_drain(args.database_url, args.jobs, args.workers)["jobs_per_s"]
    peer = pgqueuer_drain(peers_dsn, args.jobs, args.workers)
    theirs, with_startup = peer["jobs_per_s"], peer["jobs_per_s_with_startup"]

    def vs(figure: float) -> str:
        return "-" if ours is None else f"{ours / figure:.2f}x"

    table = Table(
        title=f"No-op jobs, {args.jobs} jobs, {args.workers} worker processes, PostgreSQL"
    )
    table.add_column("queue")
    table.add_column("jobs/s", justify="right")
    table.add_column("careflow ÷ this", justify="right")
    if ours is not None:
        table.add_row("careflow", f"{ours:,.0f}", "1.00x")
    table.add_row(f"pgqueuer 1.6.0 (batch {PEER_BATCH}, drain mode)", f"{theirs:,.0f}", vs(theirs))
    table.add_row("pgqueuer, counting process start-up", f"{with_startup:,.0f}", vs(with_startup))
    Console().print(table)
    if args.json:
        result = {"bench": "pgqueuer", "jobs": args.jobs, "workers": args.workers}
        result |= {"batch_size": PEER_BATCH, "careflow_jobs_per_s": ours, **peer}
        print(json.dumps(result))


if __name__ == "__main__":
    main()
