"""The statements one end-to-end execution sends to PostgreSQL, counted by kind.

    python bench/perf/statements.py --database-url URL [--events 300] [--timeout 120]

What the engine's cost per execution is made of, in the unit it is paid in: careflow's CPU
goes mostly to sending statements and reading their rows (SQLAlchemy, asyncpg, the event
loop), a like amount whatever a statement does, so their number per execution says more
than a timing on this noisy machine can.

1. reset the database, start ``perf/e2e.py``'s aiosmtpd sink in a child process, and build
   careflow's app in this process;
2. create the end-to-end rule (``require_form`` then ``send_email``) and post N
   ``patient.onboarded`` events through the app (not counted);
3. start one ``Worker`` as ``careflow worker`` runs it (claims, batches, heartbeats) and
   count, until every execution is ``success``: each statement SQLAlchemy sends (by its
   verb and table), each BEGIN, COMMIT and ROLLBACK, and each pool checkout of a connection
   the pool kept (one ping each; a new connection is not pinged).

It prints the count per execution of each kind, most frequent first, and the round trips
per execution in all. The drain is counted while one in-process poller reads the success
count every 0.2 s; its reads go through a separate engine and are not in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from rich.console import Console
from rich.table import Table
from sqlalchemy import event, func, select

from benchkit.common import is_postgres, reset_database
from benchkit.workload import in_process_app, post_workload, sink_running

_TABLE = re.compile(r"\b(?:FROM|INTO|(?<!FOR )UPDATE|JOIN)\s+([a-z_]+)", re.IGNORECASE)


def kind_of(statement: str) -> str:
    """``SELECT entities``, ``INSERT jobs``, ``SAVEPOINT``: a statement's verb and tables."""
    words = statement.split()
    verb = words[0].upper() if words else "?"
    tables = list(dict.fromkeys(_TABLE.findall(statement)))
    if verb == "SELECT" and "pg_advisory_xact_lock" in statement:
        return "SELECT pg_advisory_xact_lock"
    return f"{verb} {', '.join(tables)}".strip()


def _count_pings(pool: Any, counts: Counter[str]) -> None:
    """Count the checkouts careflow pings: all but a new connection's first (careflow.db)."""

    def made(_dbapi_connection: Any, record: Any) -> None:
        record.info["bench.new"] = True

    def checked_out(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if not record.info.pop("bench.new", False):
            counts.update(["(checkout ping)"])

    event.listen(pool, "connect", made)
    event.listen(pool, "checkout", checked_out)


async def _count(database_url: str, smtp_port: int, events: int, seconds: float) -> Counter[str]:
    from careflow.db import create_engine
    from careflow.executions.models import Execution
    from careflow.jobs.worker import Worker

    settings, engine, app = in_process_app(database_url, smtp_port)
    poll_engine = create_engine(database_url)
    counts: Counter[str] = Counter()
    try:
        await post_workload(app, settings, events, "st")

        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", lambda *a: counts.update([kind_of(a[2])]))
        event.listen(sync, "begin", lambda conn: counts.update(["BEGIN"]))
        event.listen(sync, "commit", lambda conn: counts.update(["COMMIT"]))
        event.listen(sync, "rollback", lambda conn: counts.update(["ROLLBACK"]))
        _count_pings(sync.pool, counts)

        worker = Worker(
            app.state.sessionmaker, settings, app.state.clock, services=app.state.services
        )
        success = select(func.count()).select_from(Execution).where(Execution.status == "success")
        await worker.start()
        deadline = time.monotonic() + seconds
        try:
            while True:
                async with poll_engine.connect() as conn:
                    done = (await conn.execute(success)).scalar_one()
                if done >= events:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{done} of {events} executions success in {seconds} s")
                await asyncio.sleep(0.2)
        finally:
            await worker.stop()
    finally:
        await engine.dispose()
        await poll_engine.dispose()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL (a bench database)")
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    if not is_postgres(args.database_url):
        raise SystemExit("PostgreSQL only: give --database-url of a bench database")

    with sink_running() as port:
        reset_database(args.database_url)
        counts = asyncio.run(_count(args.database_url, port, args.events, args.timeout))

    per = {kind: n / args.events for kind, n in counts.items()}
    table = Table(title=f"Statements per execution, {args.events:,} executions, one worker")
    table.add_column("statement", justify="left")
    table.add_column("per execution", justify="right")
    for kind, value in sorted(per.items(), key=lambda kv: (-kv[1], kv[0])):
        if value >= 0.005:
            table.add_row(kind, f"{value:.2f}")
    table.add_row("[b]round trips in all[/b]", f"[b]{sum(per.values()):.2f}[/b]")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
