"""careflow's job queue beside pgqueuer: no-op jobs drained by K processes on PostgreSQL.

    python bench/compare_queue.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/careflow_bench [--jobs 10000] [--workers 2]

pgqueuer 1.6.0 is installed into its own environment (``bench/.peers``) and works in its
own database (``<name>_peers``, reset each run). careflow's figure comes from
``bench/bench_queue.py`` run in the same invocation with the same job count and workers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
import venv
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.table import Table

PEERS = Path(__file__).parent / ".peers"

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
    await conn.close()
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

PEER_WORKER = """
import asyncio, sys, asyncpg
from datetime import timedelta
from pgqueuer import QueueManager, Queries, AsyncpgDriver
from pgqueuer.types import QueueExecutionMode
async def main(dsn):
    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    @qm.entrypoint("noop")
    async def noop(job):
        return None
    await qm.run(mode=QueueExecutionMode.drain, batch_size=10, dequeue_timeout=timedelta(seconds=1))
    await conn.close()
asyncio.run(main(sys.argv[1]))
"""


def peer_python() -> Path:
    python = PEERS / "bin" / "python"
    if not python.exists():
        venv.create(PEERS, with_pip=True)
    check = subprocess.run([str(python), "-c", "import pgqueuer"], capture_output=True)
    if check.returncode != 0:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "pgqueuer==1.6.0", "asyncpg"], check=True
        )
    return python


async def reset_database(admin_dsn: str, name: str) -> None:
    if name in ("test", "postgres", "template0", "template1"):
        raise SystemExit(f"refusing to reset database {name!r}")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def pgqueuer_drain(python: Path, dsn: str, jobs: int, workers: int) -> float:
    subprocess.run([str(python), "-c", PEER_SETUP, dsn, str(jobs)], check=True)
    started = time.perf_counter()
    procs = [subprocess.Popen([str(python), "-c", PEER_WORKER, dsn]) for _ in range(workers)]
    for proc in procs:
        if proc.wait(timeout=600) != 0:
            raise SystemExit("a pgqueuer worker failed")
    return jobs / (time.perf_counter() - started)


def careflow_drain(url: str, jobs: int, workers: int) -> float:
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "bench_queue.py"),
            "--database-url",
            url,
            "--jobs",
            str(jobs),
            "--workers",
            str(workers),
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    last = [line for line in out.stdout.splitlines() if line.startswith("{")][-1]
    return float(json.loads(last)["jobs_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--database-url", required=True, help="careflow's PostgreSQL bench database"
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    base = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    server, name = base.rsplit("/", 1)
    peers_db = f"{name}_peers"
    asyncio.run(reset_database(f"{server}/postgres", peers_db))

    ours = careflow_drain(args.database_url, args.jobs, args.workers)
    theirs = pgqueuer_drain(peer_python(), f"{server}/{peers_db}", args.jobs, args.workers)

    table = Table(
        title=f"No-op jobs, {args.jobs} jobs, {args.workers} worker processes, PostgreSQL"
    )
    table.add_column("queue")
    table.add_column("jobs/s", justify="right")
    table.add_column("vs pgqueuer", justify="right")
    table.add_row("careflow", f"{ours:,.0f}", f"{ours / theirs:.2f}x")
    table.add_row("pgqueuer 1.6.0 (batch 10, drain mode)", f"{theirs:,.0f}", "1.00x")
    Console().print(table)


if __name__ == "__main__":
    main()
