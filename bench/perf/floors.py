"""Floors under the end-to-end figure: what one SMTP delivery and one SQL statement cost here.

    python bench/perf/floors.py [--database-url URL] [--messages 4000] [--statements 500]

Two measurements, each without careflow's engine around it:

1. SMTP: ``aiosmtplib`` delivering to the end-to-end bench's aiosmtpd ``Sink`` (run in a
   child process, as the bench runs it beside the workers) over 1, 4 and 8 kept
   connections, two ways: an ``email.message.EmailMessage`` handed to ``send_message``
   (what careflow's ``SmtpTransport`` does), and bytes already built handed to
   ``sendmail``. It prints messages/s and the CPU per message of the client and the sink.
2. SQL (PostgreSQL only): one primary-key read of an ``executions`` row, 500 times in one
   transaction, through the ORM (``session.scalar(select(Execution)...)``), through Core
   with a statement built each time, with one statement built once, and through asyncpg
   with no SQLAlchemy at all. It prints the CPU per statement of each. The table must hold
   rows: run it after ``perf/e2e.py`` on the same database.

Both were measured as floors for the retired target "end to end at least 1.0 times Celery's
no-op tasks/s" (at ~1,800 tasks/s on two cores, ~1.1 ms of CPU an execution in all
processes); they remain what one delivery and one statement cost on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

import aiosmtplib
from rich.console import Console
from rich.table import Table

from benchkit.common import cpu_of, fmt, free_port, is_postgres, loadavg
from benchkit.workload import serve_sink

BODY = "Hello Ada, welcome to the practice. " * 8


def _message(n: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "practice@example.com"
    message["To"] = f"patient{n}@example.com"
    message["Subject"] = "Welcome"
    message["Message-ID"] = f"<floor-{n}@careflow>"
    message.set_content(BODY)
    return message


def _raw(n: int) -> bytes:
    return (
        f"From: practice@example.com\r\nTo: patient{n}@example.com\r\nSubject: Welcome\r\n"
        f"Message-ID: <floor-{n}@careflow>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{BODY}\r\n"
    ).encode()


async def _deliver(port: int, total: int, connections: int, built: bool) -> float:
    async def one(k: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, local_hostname="bench")
        await client.connect()
        for i in range(total // connections):
            n = k * 1_000_000 + i
            if built:
                await client.sendmail("practice@example.com", [f"patient{n}@example.com"], _raw(n))
            else:
                await client.send_message(_message(n))
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(connections)))
    return time.perf_counter() - started


def smtp_rows(total: int) -> list[list[str]]:
    port = free_port()
    ready, stop = mp.Event(), mp.Event()
    sink = mp.Process(target=serve_sink, args=(port, ready, stop), daemon=True)
    sink.start()
    ready.wait(30)
    rows = []
    try:
        for built in (False, True):
            for connections in (1, 4, 8):
                sink_before, mine_before = cpu_of(sink.pid or 0), time.process_time()
                seconds = asyncio.run(_deliver(port, total, connections, built))
                client_ms = (time.process_time() - mine_before) / total * 1000
                sink_ms = (cpu_of(sink.pid or 0) - sink_before) / total * 1000
                how = "bytes → sendmail" if built else "EmailMessage → send_message"
                rows.append(
                    [
                        f"SMTP, {how}, {connections} connection(s)",
                        f"{fmt(total / seconds)} messages/s",
                        f"client {client_ms:.2f} ms + sink {sink_ms:.2f} ms",
                    ]
                )
    finally:
        stop.set()
        sink.join(10)
    return rows


async def sql_rows(database_url: str, count: int) -> list[list[str]]:
    from sqlalchemy import bindparam, select

    from careflow.db import create_engine, create_sessionmaker
    from careflow.executions.models import Execution

    engine = create_engine(database_url)
    sessions = create_sessionmaker(engine)
    table = Execution.__table__
    built_once = select(table).where(table.c.id == bindparam("pk"))
    rows: list[list[str]] = []
    try:
        async with sessions() as session:
            ids = list((await session.scalars(select(Execution.id).limit(count))).all())
        if not ids:
            return [["SQL", "no executions: run perf/e2e.py on this database first", ""]]
        async with sessions() as session, session.begin():
            connection = await session.connection()
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None

            async def orm(pk: int) -> None:
                await session.scalar(select(Execution).where(Execution.id == pk))

            async def core(pk: int) -> None:
                (await connection.execute(select(table).where(table.c.id == pk))).first()

            async def core_built_once(pk: int) -> None:
                (await connection.execute(built_once, {"pk": pk})).first()

            async def asyncpg_alone(pk: int) -> None:
                await raw.fetchrow("SELECT * FROM executions WHERE id = $1", pk)

            ways: list[tuple[str, Callable[[int], Any]]] = [
                ("the ORM", orm),
                ("Core, statement built each time", core),
                ("Core, statement built once", core_built_once),
                ("asyncpg alone", asyncpg_alone),
            ]
            for label, read in ways:
                for pk in ids[:20]:  # warm the statement caches
                    await read(pk)
                started = time.process_time()
                for pk in ids:
                    await read(pk)
                per = (time.process_time() - started) / len(ids) * 1000
                rows.append([f"SQL, executions row by id, {label}", f"{per:.3f} ms CPU", ""])
    finally:
        await engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="PostgreSQL, for the SQL rows")
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--statements", type=int, default=500)
    args = parser.parse_args()

    load_before = loadavg()
    rows = smtp_rows(args.messages)
    if args.database_url and is_postgres(args.database_url):
        rows += asyncio.run(sql_rows(args.database_url, args.statements))
    table = Table(title="Floors under one execution")
    for column in ("measure", "rate", "CPU per unit"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    for row in rows:
        table.add_row(*row)
    table.add_row("load average (1 min) before / after", f"{load_before} / {loadavg()}", "")
    Console().print(table)


if __name__ == "__main__":
    main()
