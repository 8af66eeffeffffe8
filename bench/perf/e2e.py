"""End to end: executions completed per second, from POST /v1/events to the email sent.

    python bench/perf/e2e.py [--database-url URL] [--events 2000] [--workers K]
                             [--post-concurrency 16] [--timeout 150] [--drain]

Creates an automation rule through the API (trigger ``patient.onboarded``; actions
``require_form`` then ``send_email`` with template ``welcome_patient``), starts an aiosmtpd
SMTP sink on a free port that counts messages and their Message-IDs, starts careflow with
``CAREFLOW_SMTP_URL`` pointing at it, posts N events (one new patient each), and measures
the time until every execution is ``success`` (``GET /v1/automations/executions?status=
success&limit=1`` → ``meta.total``). Then checks one email per event, each Message-ID unique.

SQLite (default, a fresh temporary file): one ``careflow serve`` with its in-process worker.
PostgreSQL: ``careflow serve --no-worker`` plus K ``careflow worker`` processes (default 2);
the ``public`` schema of the given database is dropped and re-created.

``--drain`` (PostgreSQL): post every event first, with no worker running, then start the
workers and time from their start until every execution is ``success``: the engine's own
rate, without the load generator's, measured the way queue peers are (enqueue, then drain).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

import httpx
from aiosmtpd.controller import Controller
from rich.console import Console
from rich.table import Table

from benchkit.common import (
    Workdir,
    careflow_cmd,
    careflow_env,
    children,
    describe_db,
    fmt,
    free_port,
    is_postgres,
    loadavg,
    mint_token,
    reset_database,
    server_cpu_delta,
    server_cpu_seconds,
    tree_cpu_seconds,
    wait_http,
)
from benchkit.workload import RULE, Sink, onboarded


def steady_rate(url: str) -> tuple[float, float]:
    """Executions a second from the first execution started to the last one finished, and
    that span in seconds: how Celery's drain is timed (first task done → last task done),
    with no process start-up in it. Read from the executions' own timestamps."""
    from sqlalchemy import func, select

    from careflow.db import create_engine
    from careflow.executions.models import Execution

    async def read() -> tuple[Any, Any, int]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                row = (
                    await connection.execute(
                        select(
                            func.min(Execution.executed_at),
                            func.max(Execution.finished_at),
                            func.count(),
                        ).where(Execution.status == "success")
                    )
                ).one()
        finally:
            await engine.dispose()
        return row[0], row[1], row[2]

    first, last, count = asyncio.run(read())
    if first is None or last is None or count < 2:
        return float("nan"), float("nan")
    span = (last - first).total_seconds()
    return count / max(span, 1e-9), span


async def post_events(
    base: str, token: str, n: int, concurrency: int, prefix: str, deadline: float
) -> tuple[float, Counter[int]]:
    statuses: Counter[int] = Counter()
    next_n = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def loop() -> None:
            nonlocal next_n
            while next_n < n and time.monotonic() < deadline:
                i = next_n
                next_n += 1
                response = await client.post("/v1/events", json=onboarded(prefix, i))
                statuses[response.status_code] += 1

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return time.monotonic() - started, statuses


def executions_total(client: httpx.Client, status: str | None) -> int:
    params: dict[str, Any] = {"limit": 1}
    if status:
        params["status"] = status
    response = client.get("/v1/automations/executions", params=params)
    response.raise_for_status()
    return int(response.json()["meta"]["total"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=None, help="PG only; default 2")
    parser.add_argument("--post-concurrency", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=150.0, help="max seconds in all")
    parser.add_argument("--stall", type=float, default=30.0, help="stop after S s of no progress")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument(
        "--drain", action="store_true", help="PG: post first, then start the workers and time"
    )
    args = parser.parse_args()
    if args.drain and not (args.database_url and is_postgres(args.database_url)):
        parser.error("--drain needs a PostgreSQL --database-url (workers apart from serve)")

    workdir = Workdir()
    url = args.database_url or workdir.sqlite_url()
    pg = is_postgres(url)
    workers = (args.workers or 2) if pg else 0
    reset_database(url)

    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    env = careflow_env(
        url, CAREFLOW_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}", CAREFLOW_LOG_LEVEL="WARNING"
    )
    admin = mint_token(url, "admin")
    service = mint_token(url, "service")
    console = Console(width=140)
    result: dict[str, Any] = {}
    try:
        with children(workdir) as kids:
            serve = ["serve", "--port", str(api_port)] + (["--no-worker"] if pg else [])
            pids = [kids.start("serve", careflow_cmd(*serve), env).pid]

            def start_workers() -> None:
                pids.extend(
                    kids.start(f"worker{i}", careflow_cmd("worker"), env).pid
                    for i in range(workers)
                )

            if not args.drain:
                start_workers()
            wait_http(f"{base}/healthz", kids)
            client = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30
            )
            created = client.post("/v1/automations/rules", json=RULE)
            if created.status_code != 201:
                raise RuntimeError(f"rule not created: {created.status_code} {created.text}")

            load_before = loadavg()
            cpu0 = sum(tree_cpu_seconds(p) for p in pids)
            pg0 = server_cpu_seconds() if pg else {}
            started = time.monotonic()
            deadline = started + args.timeout
            post_s, statuses = asyncio.run(
                post_events(base, service, args.events, args.post_concurrency, "e2e", deadline)
            )
            accepted = statuses.get(202, 0)
            if args.drain:
                # The clock and the CPU count start with the workers: the events are queued.
                # No ANALYZE here: the tables the drain fills (executions, episodes …) are
                # still empty, and statistics that say so make the planner scan them.
                cpu0 = sum(tree_cpu_seconds(p) for p in pids)
                started = time.monotonic()
                pg0 = server_cpu_seconds() if pg else {}
                start_workers()
            done, progressed_at = 0, time.monotonic()
            while time.monotonic() < deadline:
                kids.check_alive()
                now_done = executions_total(client, "success")
                if now_done > done:
                    done, progressed_at = now_done, time.monotonic()
                if done >= accepted:
                    break
                if time.monotonic() - progressed_at > args.stall:
                    console.print(f"[red]no execution succeeded for {args.stall:.0f} s: stopping")
                    break
                time.sleep(0.25)
            total_s = time.monotonic() - started
            cpu = sum(tree_cpu_seconds(p) for p in pids) - cpu0
            pg_cpu = server_cpu_delta(pg0, server_cpu_seconds()) if pg else float("nan")
            load_after = loadavg()
            # Emails are sent inside the action, so they are in once the executions are done;
            # allow a moment for the sink's last DATA to be counted.
            settle = time.monotonic() + 5
            while sink.messages < done and time.monotonic() < settle:
                time.sleep(0.1)
            all_executions = executions_total(client, None)
            failed = {s: executions_total(client, s) for s in ("failure", "partial_failure")}
            running = executions_total(client, "running")
            client.close()
    finally:
        controller.stop()

    duplicates = sum(c - 1 for c in sink.message_ids.values() if c > 1)
    steady = steady_rate(url)
    result = {
        "bench": "e2e",
        "db": describe_db(url),
        "events": args.events,
        "accepted": accepted,
        "post_statuses": dict(statuses),
        "post_seconds": post_s,
        "post_per_s": accepted / post_s,
        "success": done,
        "total_seconds": total_s,
        "executions_per_s": done / total_s,
        "mode": "drain" if args.drain else "overlapped",
        "cpu_ms_per_execution": 1000 * cpu / done if done else float("nan"),
        # What Celery's tasks/s measures (first task done → last task done): from the first
        # email at the sink to the last, with no process start-up in it.
        "steady_per_s": steady[0],
        "steady_seconds": steady[1],
        "postgres_cpu_ms_per_execution": 1000 * pg_cpu / done if done else float("nan"),
        "emails": sink.messages,
        "unique_message_ids": len(sink.message_ids),
        "duplicate_message_ids": duplicates,
        "executions": all_executions,
        "failed": failed,
        "running": running,
        "load": f"{load_before} / {load_after}",
    }
    setup = (
        "1 x careflow serve (in-process worker)"
        if not pg
        else (f"careflow serve --no-worker + {workers} x careflow worker")
    )
    table = Table(title=f"End to end, {result['db']}: {setup}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("events posted (202)", f"{accepted:,} of {args.events:,}")
    table.add_row(
        f"posting ({args.post_concurrency} connections)",
        f"{post_s:.1f} s, {fmt(result['post_per_s'])} events/s",
    )
    table.add_row("executions success", f"{done:,} (of {all_executions:,} executions)")
    table.add_row(
        "failure / partial_failure / running",
        f"{failed['failure']} / {failed['partial_failure']} / {running}",
    )
    timed = "workers start → all success" if args.drain else "first post → all success"
    table.add_row(timed, f"{total_s:.1f} s")
    table.add_row("executions/s end to end", fmt(result["executions_per_s"], 1))
    table.add_row(
        "first execution started → last finished (as Celery's drain is timed)",
        f"{result['steady_seconds']:.1f} s, {fmt(result['steady_per_s'], 1)} executions/s",
    )
    table.add_row(
        "careflow CPU per execution (all processes)", f"{fmt(result['cpu_ms_per_execution'], 1)} ms"
    )
    if pg:
        table.add_row(
            "PostgreSQL CPU per execution (all server processes)",
            f"{fmt(result['postgres_cpu_ms_per_execution'], 2)} ms",
        )
    table.add_row("emails at the SMTP sink", f"{sink.messages:,}")
    table.add_row("unique Message-IDs / duplicates", f"{len(sink.message_ids):,} / {duplicates}")
    table.add_row("load average (1 min) before / after", result["load"])
    console.print(table)
    console.print(f"logs: {workdir.path}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
