"""One fixed piece of engine work in one process: the unit ``perf/instructions.py`` counts.

    python bench/perf/engine_cpu.py --database-url URL [--events 1000] [--rounds 3]
                                    [--warmup 100]

1. reset the database, start ``perf/e2e.py``'s aiosmtpd sink in a child process, and build
   careflow's app in this process;
2. create the end-to-end rule (``require_form`` then ``send_email``) and post N
   ``patient.onboarded`` events through the app (in process, not timed);
3. run every job with one in-process ``Worker.run_until_idle()``, one job at a time, and
   take this process's CPU time (``time.process_time``) and PostgreSQL's over that drain.

A warm-up round (``--warmup``, 100 events) runs first and is not counted. It prints the CPU
per execution of careflow's code and of the database for each round, and the median.

On this project's shared machine those CPU seconds are not steady either: the same tree
measured 12.6 to 25.6 ms per execution across rounds and runs (docs/benchmarks.md). Under
callgrind the work is counted in instructions, which are: that is what
``perf/instructions.py`` does with this script.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from rich.console import Console
from rich.table import Table

from benchkit.common import is_postgres, loadavg, postgres_cpu, reset_database
from benchkit.workload import in_process_app, post_workload, sink_running


async def _round(database_url: str, smtp_port: int, events: int) -> dict[str, float]:
    from careflow.jobs.worker import Worker

    settings, engine, app = in_process_app(database_url, smtp_port)
    try:
        await post_workload(app, settings, events, "cpu")
        clock = app.state.clock
        worker = Worker(app.state.sessionmaker, settings, clock, services=app.state.services)
        pg_before, cpu_before, started = postgres_cpu(), time.process_time(), time.monotonic()
        ran = await worker.run_until_idle()
        cpu, pg = time.process_time() - cpu_before, postgres_cpu() - pg_before
        seconds = time.monotonic() - started
        if ran != 2 * events:
            raise RuntimeError(f"{ran} jobs ran, expected {2 * events}")
    finally:
        await engine.dispose()
    return {
        "careflow_ms": 1000 * cpu / events,
        "postgres_ms": 1000 * pg / events,
        "per_s": events / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL (a bench database)")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=100, help="events of the uncounted round")
    args = parser.parse_args()
    if not is_postgres(args.database_url):
        raise SystemExit("PostgreSQL only: give --database-url of a bench database")

    rounds: list[dict[str, Any]] = []
    with sink_running() as port:
        # A warm-up round, not counted: compiled statements, templates, imports.
        reset_database(args.database_url)
        asyncio.run(_round(args.database_url, port, args.warmup))
        for _ in range(args.rounds):
            reset_database(args.database_url)
            load = loadavg()
            result = asyncio.run(_round(args.database_url, port, args.events))
            rounds.append({**result, "load": f"{load} / {loadavg()}"})

    table = Table(title=f"Engine CPU per execution, {args.events:,} executions, one process")
    for column in ("round", "careflow CPU", "PostgreSQL CPU", "executions/s", "load"):
        table.add_column(column, justify="right")
    for i, r in enumerate(rounds, 1):
        table.add_row(
            str(i),
            f"{r['careflow_ms']:.2f} ms",
            f"{r['postgres_ms']:.2f} ms",
            f"{r['per_s']:.0f}",
            r["load"],
        )
    table.add_row(
        "median",
        f"{statistics.median(r['careflow_ms'] for r in rounds):.2f} ms",
        f"{statistics.median(r['postgres_ms'] for r in rounds):.2f} ms",
        f"{statistics.median(r['per_s'] for r in rounds):.0f}",
        "",
    )
    Console().print(table)


if __name__ == "__main__":
    main()
