"""The ceiling under the end-to-end target: the bench's workload with no engine at all.

    python bench/perf/ceiling.py --database-url URL [--events 20000] [--workers 2]
                                 [--loops 2] [--batch 100] [--no-celery]

What is the fastest that *any* engine could run ``perf/e2e.py``'s workload on this machine,
with the guarantees the target asks for (durable rows, a leased queue, a form and a
message per execution, an email at the same aiosmtpd sink)? This script runs that workload
with nothing of careflow in it: asyncpg alone, no SQLAlchemy, no rules, no conditions, no
templates, no pathway routing, no audit, no snapshots, and every step set-based, one
multi-row statement per table per batch of jobs. It is a ceiling, not a design: careflow
does all of those things and a real engine cannot do less than this.

In a schema of its own (``ceiling``, dropped before and after) of the given database:

1. N events and N ``dispatch`` jobs are loaded first (not timed), as ``perf/e2e.py --drain``
   posts every event before its workers start.
2. W worker processes start, each running L loops with a connection each. A loop claims a
   batch of due jobs (``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT B)``,
   a lease, committed on its own as careflow's claim is), then in one transaction:
   - ``dispatch``: reads the events, inserts the executions (``ON CONFLICT DO NOTHING``),
     the forms and the form actions' results, routes each event into an open episode of its
     patient (an episode row and a link row, as careflow's default pathway does), marks the
     events processed, queues one ``send`` job per execution and deletes its jobs;
   - ``send``: reads the executions with their events, skips those whose message row
     exists, delivers each email (bytes built by an f-string, a deterministic Message-ID)
     over the loop's kept SMTP connection, then inserts the message rows and the results,
     marks the executions ``success`` and deletes its jobs.
3. The time runs from the workers' start until every execution is ``success``.

It runs once for each ``--batch`` size (default 50, 100, 250 and 500 jobs a claim). Then
(unless ``--no-celery``) Celery drains 20,000 no-op tasks in the same invocation, and the
table prints each run's rate, its CPU per execution in the workers, the SMTP sink and
PostgreSQL, and its ratio to Celery's tasks/s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

import aiosmtplib
import asyncpg
from rich.console import Console
from rich.table import Table

from benchkit.common import (
    REFUSED_DATABASES,
    cpu_of,
    fmt,
    free_port,
    is_postgres,
    loadavg,
    postgres_cpu,
    run_json_script,
)
from benchkit.workload import serve_sink

SCHEMA = """
DROP SCHEMA IF EXISTS ceiling CASCADE;
CREATE SCHEMA ceiling;
SET search_path = ceiling;
CREATE TABLE events (
    id bigserial PRIMARY KEY, patient_id text NOT NULL, email text NOT NULL,
    first_name text NOT NULL, data jsonb NOT NULL, processed_at timestamptz);
CREATE TABLE jobs (
    id bigserial PRIMARY KEY, kind smallint NOT NULL, ref bigint NOT NULL,
    run_at timestamptz NOT NULL DEFAULT now(), locked_until timestamptz,
    attempts int NOT NULL DEFAULT 0);
CREATE INDEX jobs_due ON jobs (run_at, id);
CREATE TABLE executions (
    id bigserial PRIMARY KEY, event_id bigint NOT NULL UNIQUE REFERENCES events (id),
    status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX executions_status ON executions (status);
CREATE TABLE action_results (
    execution_id bigint NOT NULL REFERENCES executions (id), idx int NOT NULL,
    status text NOT NULL, output jsonb NOT NULL, PRIMARY KEY (execution_id, idx));
CREATE TABLE forms (
    id bigserial PRIMARY KEY, patient_id text NOT NULL, template_id int NOT NULL,
    status text NOT NULL, UNIQUE (patient_id, template_id));
CREATE TABLE episodes (
    id bigserial PRIMARY KEY, patient_id text NOT NULL, status text NOT NULL,
    priority text NOT NULL DEFAULT 'normal', created_at timestamptz NOT NULL DEFAULT now());
CREATE UNIQUE INDEX episodes_open ON episodes (patient_id) WHERE status = 'open';
CREATE TABLE episode_events (
    event_id bigint PRIMARY KEY REFERENCES events (id),
    episode_id bigint NOT NULL REFERENCES episodes (id));
CREATE TABLE messages (
    id bigserial PRIMARY KEY, execution_id bigint NOT NULL REFERENCES executions (id),
    idx int NOT NULL, message_id text NOT NULL, UNIQUE (execution_id, idx));
"""

DISPATCH, SEND = 1, 2
BODY = "Hello {name}, welcome to the practice. Your registration form is waiting. " * 4

CLAIM = """
UPDATE ceiling.jobs SET locked_until = now() + interval '30 seconds', attempts = attempts + 1
WHERE id IN (
    SELECT id FROM ceiling.jobs
    WHERE run_at <= now() AND (locked_until IS NULL OR locked_until < now())
    ORDER BY run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING id, kind, ref
"""


def _dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _load(dsn: str, events: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        await conn.execute(
            """
            INSERT INTO ceiling.events (patient_id, email, first_name, data)
            SELECT 'p' || n, 'patient' || n || '@example.com', 'Ada',
                   jsonb_build_object('patient', jsonb_build_object('id', 'p' || n))
            FROM generate_series(1, $1) AS n
            """,
            events,
        )
        await conn.execute(
            "INSERT INTO ceiling.jobs (kind, ref) SELECT 1, id FROM ceiling.events ORDER BY id"
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _results(conn: asyncpg.Connection, ids: list[int], index: int, output: str) -> None:
    """Action ``index``'s result row for each execution, once."""
    await conn.execute(
        """
        INSERT INTO ceiling.action_results (execution_id, idx, status, output)
        SELECT unnest($1::bigint[]), $2, 'success', $3::jsonb ON CONFLICT DO NOTHING
        """,
        ids,
        index,
        output,
    )


async def _dispatch(conn: asyncpg.Connection, jobs: list[int], event_ids: list[int]) -> None:
    async with conn.transaction():
        patients = await conn.fetch(
            "SELECT id, patient_id FROM ceiling.events WHERE id = ANY($1::bigint[])", event_ids
        )
        executions = await conn.fetch(
            """
            INSERT INTO ceiling.executions (event_id, status)
            SELECT unnest($1::bigint[]), 'running' ON CONFLICT (event_id) DO NOTHING
            RETURNING id
            """,
            [row["id"] for row in patients],
        )
        ids = [row["id"] for row in executions]
        await conn.execute(
            """
            INSERT INTO ceiling.forms (patient_id, template_id, status)
            SELECT unnest($1::text[]), 10, 'pending' ON CONFLICT DO NOTHING
            """,
            [row["patient_id"] for row in patients],
        )
        await _results(conn, ids, 0, '{"form": "pending"}')
        await conn.execute(
            """
            INSERT INTO ceiling.episodes (patient_id, status)
            SELECT unnest($1::text[]), 'open'
            ON CONFLICT (patient_id) WHERE status = 'open' DO NOTHING
            """,
            [row["patient_id"] for row in patients],
        )
        await conn.execute(
            """
            INSERT INTO ceiling.episode_events (event_id, episode_id)
            SELECT e.id, ep.id FROM ceiling.events e
            JOIN ceiling.episodes ep ON ep.patient_id = e.patient_id AND ep.status = 'open'
            WHERE e.id = ANY($1::bigint[])
            ON CONFLICT DO NOTHING
            """,
            event_ids,
        )
        await conn.execute(
            "UPDATE ceiling.events SET processed_at = now() WHERE id = ANY($1::bigint[])",
            event_ids,
        )
        await conn.execute(
            "INSERT INTO ceiling.jobs (kind, ref) SELECT 2, unnest($1::bigint[])", ids
        )
        await conn.execute("DELETE FROM ceiling.jobs WHERE id = ANY($1::bigint[])", jobs)


async def _send(
    conn: asyncpg.Connection, smtp: aiosmtplib.SMTP, jobs: list[int], execution_ids: list[int]
) -> None:
    rows = await conn.fetch(
        """
        SELECT x.id, e.email, e.first_name FROM ceiling.executions x
        JOIN ceiling.events e ON e.id = x.event_id
        WHERE x.id = ANY($1::bigint[])
          AND NOT EXISTS (SELECT 1 FROM ceiling.messages m WHERE m.execution_id = x.id)
        """,
        execution_ids,
    )
    sent: list[tuple[int, str]] = []
    for row in rows:
        message_id = f"<{row['id']}.1@ceiling>"
        raw = (
            f"From: practice@example.com\r\nTo: {row['email']}\r\nSubject: Welcome\r\n"
            f"Message-ID: {message_id}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"{BODY.format(name=row['first_name'])}\r\n"
        ).encode()
        await smtp.sendmail("practice@example.com", [row["email"]], raw)
        sent.append((row["id"], message_id))
    async with conn.transaction():
        ids = [execution for execution, _ in sent]
        await conn.execute(
            """
            INSERT INTO ceiling.messages (execution_id, idx, message_id)
            SELECT unnest($1::bigint[]), 1, unnest($2::text[]) ON CONFLICT DO NOTHING
            """,
            ids,
            [message_id for _, message_id in sent],
        )
        await _results(conn, ids, 1, '{"message": "sent"}')
        await conn.execute(
            """
            UPDATE ceiling.executions SET status = 'success', updated_at = now()
            WHERE id = ANY($1::bigint[])
            """,
            execution_ids,
        )
        await conn.execute("DELETE FROM ceiling.jobs WHERE id = ANY($1::bigint[])", jobs)


async def _loop(dsn: str, smtp_port: int, batch: int, stop_at: float) -> None:
    conn = await asyncpg.connect(dsn)
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port, local_hostname="ceiling")
    await smtp.connect()
    try:
        while time.monotonic() < stop_at:
            claimed = await conn.fetch(CLAIM, batch)
            if not claimed:
                if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM ceiling.jobs)"):
                    return
                await asyncio.sleep(0.01)
                continue
            dispatch = [(row["id"], row["ref"]) for row in claimed if row["kind"] == DISPATCH]
            send = [(row["id"], row["ref"]) for row in claimed if row["kind"] == SEND]
            if dispatch:
                await _dispatch(conn, [j for j, _ in dispatch], [r for _, r in dispatch])
            if send:
                await _send(conn, smtp, [j for j, _ in send], [r for _, r in send])
    finally:
        await smtp.quit()
        await conn.close()


def _worker(dsn: str, smtp_port: int, loops: int, batch: int, go: Any) -> None:
    async def run() -> None:
        stop_at = time.monotonic() + 600
        await asyncio.gather(*(_loop(dsn, smtp_port, batch, stop_at) for _ in range(loops)))

    go.wait(60)
    asyncio.run(run())


async def _count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def _drop(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA ceiling CASCADE")
    finally:
        await conn.close()


def ceiling_run(
    database_url: str, events: int, workers: int, loops: int, batch: int
) -> dict[str, Any]:
    dbname = database_url.rsplit("/", 1)[1].split("?", 1)[0]
    if not is_postgres(database_url) or dbname in REFUSED_DATABASES:
        raise SystemExit("give a PostgreSQL database of the bench's own (not test or postgres)")
    dsn = _dsn(database_url)
    asyncio.run(_load(dsn, events))

    port = free_port()
    ready, stop, go = mp.Event(), mp.Event(), mp.Event()
    sink = mp.Process(target=serve_sink, args=(port, ready, stop), daemon=True)
    sink.start()
    ready.wait(30)
    procs = [mp.Process(target=_worker, args=(dsn, port, loops, batch, go)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    load_before = loadavg()
    reaped0 = os.times()
    sink0, pg0 = cpu_of(sink.pid or 0), postgres_cpu()
    started = time.monotonic()
    go.set()
    for proc in procs:
        proc.join(600)
    seconds = time.monotonic() - started
    sink_cpu, pg_cpu = cpu_of(sink.pid or 0) - sink0, postgres_cpu() - pg0
    # The workers have exited and been joined: their CPU is in this process's children times.
    reaped = os.times()
    worker_cpu = (reaped.children_user + reaped.children_system) - (
        reaped0.children_user + reaped0.children_system
    )
    stop.set()
    sink.join(10)
    success = asyncio.run(
        _count(dsn, "SELECT count(*) FROM ceiling.executions WHERE status = 'success'")
    )
    unique = asyncio.run(_count(dsn, "SELECT count(DISTINCT message_id) FROM ceiling.messages"))
    forms = asyncio.run(_count(dsn, "SELECT count(*) FROM ceiling.forms"))
    linked = asyncio.run(_count(dsn, "SELECT count(*) FROM ceiling.episode_events"))
    asyncio.run(_drop(dsn))
    if not success == unique == forms == linked == events:
        raise RuntimeError(
            f"of {events}: {success} success, {unique} messages, {forms} forms, {linked} linked"
        )
    return {
        "events": events,
        "seconds": seconds,
        "per_s": events / seconds,
        "worker_ms": 1000 * worker_cpu / events,
        "sink_ms": 1000 * sink_cpu / events,
        "postgres_ms": 1000 * pg_cpu / events,
        "load": f"{load_before} / {loadavg()}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="PostgreSQL (a bench database)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--loops", type=int, default=2, help="claim loops per worker")
    parser.add_argument(
        "--batch", type=int, nargs="+", default=[50, 100, 250, 500], help="jobs per claim"
    )
    parser.add_argument("--no-celery", action="store_true", help="skip the Celery peer")
    args = parser.parse_args()

    runs = [
        (batch, ceiling_run(args.database_url, args.events, args.workers, args.loops, batch))
        for batch in args.batch
    ]
    # Celery's no-op tasks (``peers/celery_drain.py``), as a reference beside the ceiling.
    celery = (
        None if args.no_celery else run_json_script("peers/celery_drain.py", "--tasks", "20000")
    )
    title = (
        f"The ceiling: {args.events:,} executions of perf/e2e.py's workload (a form, an episode,"
        f" a message, an email each), set-based, asyncpg alone, {args.workers} workers x"
        f" {args.loops} loops"
    )
    table = Table(title=title)
    for column in ("jobs a claim", "executions/s", "CPU per execution: workers + sink + PG"):
        table.add_column(column, justify="right")
    if celery:
        table.add_column(f"vs Celery {celery['celery']} no-op", justify="right")
    table.add_column("load before / after", justify="right")
    for batch, r in runs:
        cpu = f"{r['worker_ms']:.2f} + {r['sink_ms']:.2f} + {r['postgres_ms']:.2f} ms"
        ratio = [f"{r['per_s'] / celery['tasks_per_s']:.2f}x"] if celery else []
        table.add_row(str(batch), fmt(r["per_s"]), cpu, *ratio, r["load"])
    if celery:
        table.add_row("Celery, 2 x 2", fmt(celery["tasks_per_s"]), "", "1.00x", celery["load"])
    Console().print(table)


if __name__ == "__main__":
    main()
