"""Event ingestion: ``POST /v1/events`` on careflow vs a bare FastAPI one-INSERT endpoint.

    python bench/perf/ingest.py [--database-url URL] [--concurrency 64] [--seconds 15]
                                [--processes N]

Starts careflow's API without a worker (``careflow serve --no-worker`` for one process,
``uvicorn --factory careflow.app:create_app --workers N`` for more; default 1 on SQLite,
2 on PostgreSQL), mints a ``service`` token with ``careflow token``, and drives it with
``bench/benchkit/loadgen.py`` (httpx, C connections, in a process of its own: it shares
the two cores with the servers). Then, in the same run and the same way,
``bench/peers/bare_insert_app.py``: FastAPI + asyncpg (or aiosqlite) inserting one row per
request. Prints both and the ratio.

Default database: a fresh temporary SQLite file. On PostgreSQL the ``public`` schema of the
given database is dropped and re-created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from rich.console import Console
from rich.table import Table

from benchkit.common import (
    BENCH_DIR,
    Children,
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
    pg_analyze,
    plain_pg_dsn,
    reset_database,
    sqlite_path,
    tree_cpu_seconds,
    wait_http,
)


def uvicorn_cmd(app: str, port: int, processes: int, app_dir: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", "--factory", app, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
    if app_dir:
        cmd += ["--app-dir", app_dir]
    if processes > 1:
        cmd += ["--workers", str(processes)]
    return cmd


def _loadgen_cmds(url: str, token: str, args: argparse.Namespace, prefix: str) -> list[list[str]]:
    """The commands to run in turn; the last one's JSON line is the measurement."""
    if args.loadgen == "wrk":
        script = str(BENCH_DIR / "perf" / "wrk_events.lua")

        def wrk(seconds: float, tag: str) -> list[str]:
            return [
                *("wrk", "-t2", f"-c{args.concurrency}", f"-d{max(1, round(seconds))}s"),
                *("--timeout", "30s", "-s", script, url, "--", f"{prefix}-{tag}", token),
            ]

        return (
            [wrk(args.warmup, "warm"), wrk(args.seconds, "run")]
            if args.warmup
            else [wrk(args.seconds, "run")]
        )
    cmd = [
        sys.executable,
        str(BENCH_DIR / "benchkit" / "loadgen.py"),
        "--url",
        url,
        "--token",
        token,
    ]
    cmd += ["--concurrency", str(args.concurrency), "--seconds", str(args.seconds)]
    cmd += ["--warmup", str(args.warmup), "--prefix", prefix]
    return [cmd]


def drive(
    kids: Children,
    server_pid: int,
    url: str,
    token: str,
    args: argparse.Namespace,
    prefix: str,
) -> dict[str, Any]:
    """Run the load generator against ``url``; add server and generator CPU to its result."""
    out_path = kids.workdir.log(f"loadgen-{prefix}")
    load_before = loadavg()
    cpu0 = tree_cpu_seconds(server_pid)
    started = time.monotonic()
    loadgen_cpu = 0.0
    all_requests = 0
    result: dict[str, Any] = {}
    cmds = _loadgen_cmds(url, token, args, prefix)
    for n, cmd in enumerate(cmds):
        if n and args.analyze_dsn:
            # After the warm-up, as autovacuum would have by then (it is off on some
            # machines, and a fresh table without statistics gets a plan that scans every
            # snapshot of the organisation for each batch).
            pg_analyze(args.analyze_dsn)
        with out_path.open("a") as out:
            out.flush()
            mark = out.tell()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            limit = time.monotonic() + args.warmup + args.seconds + 120
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > limit:
                    proc.kill()
                    raise TimeoutError("the load generator did not stop")
                time.sleep(0.1)
        loadgen_cpu += usage.ru_utime + usage.ru_stime
        text = out_path.read_text()[mark:]
        lines = [line for line in text.splitlines() if line.startswith("{")]
        if os.waitstatus_to_exitcode(status) != 0 or not lines:
            raise RuntimeError(f"load generator failed:\n{text[-3000:]}")
        result = json.loads(lines[-1])
        all_requests += result["all_requests"]
    wall = time.monotonic() - started
    server_cpu = tree_cpu_seconds(server_pid) - cpu0
    seconds = result.get("seconds", args.seconds)
    result["req_per_s"] = result["requests"] / seconds
    result["server_cpu_ms_per_req"] = 1000 * server_cpu / max(1, all_requests)
    result["loadgen_cpu_share"] = loadgen_cpu / wall
    result["load"] = f"{load_before} / {loadavg()}"
    return result


def run_target(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    token: str,
    args: argparse.Namespace,
    workdir: Workdir,
    port: int,
) -> dict[str, Any]:
    with children(workdir) as kids:
        server = kids.start(name, cmd, env, cwd=BENCH_DIR.parent)
        wait_http(f"http://127.0.0.1:{port}/healthz", kids)
        result = drive(kids, server.pid, f"http://127.0.0.1:{port}/v1/events", token, args, name)
        kids.check_alive()
    return result


async def _pg_count(dsn: str, table: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


def count_rows(url: str, table: str) -> int:
    if url.startswith("postgresql"):
        return asyncio.run(_pg_count(url, table))
    conn = sqlite3.connect(sqlite_path(url))
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--processes", type=int, default=None, help="default: 2 on PG, 1 on SQLite")
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "httpx"],
        default="auto",
        help="auto: wrk when installed (C, cheap on the shared cores), else benchkit/loadgen.py",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    if args.loadgen == "auto":
        args.loadgen = "wrk" if shutil.which("wrk") else "httpx"

    workdir = Workdir()
    url = args.database_url or workdir.sqlite_url()
    pg = is_postgres(url)
    processes = args.processes or (2 if pg else 1)
    if processes > 1 and not pg:
        raise SystemExit("SQLite serialises writers: use one process")
    reset_database(url)
    bare_url = plain_pg_dsn(url) if pg else f"sqlite:///{workdir.path / 'bare.db'}"
    token = mint_token(url, "service")
    # The same for both servers: ANALYZE the database after each one's warm-up.
    args.analyze_dsn = plain_pg_dsn(url) if pg and args.warmup else None
    env = careflow_env(url)

    port = free_port()
    if processes == 1:
        careflow = careflow_cmd("serve", "--no-worker", "--port", str(port))
    else:
        careflow = uvicorn_cmd("careflow.app:create_app", port, processes)
    results = {"careflow": run_target("careflow", careflow, env, token, args, workdir, port)}
    results["careflow"]["stored"] = count_rows(url if not pg else plain_pg_dsn(url), "events")

    port = free_port()
    bare = uvicorn_cmd(
        "bare_insert_app:create_app", port, processes, app_dir=str(BENCH_DIR / "peers")
    )
    bare_env = {**env, "BARE_DATABASE_URL": bare_url}
    results["bare"] = run_target("bare", bare, bare_env, token, args, workdir, port)
    results["bare"]["stored"] = count_rows(bare_url, "bare_events")

    db = describe_db(url)
    table = Table(
        title=(
            f"POST /v1/events, {db}, {processes} server process(es), "
            f"{args.concurrency} connections, {args.seconds:.0f} s, load from {args.loadgen}"
        )
    )
    for column in ("server", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "rows stored"):
        table.add_column(column, justify="left" if column == "server" else "right")
    table.add_column("server CPU ms/req", justify="right")
    table.add_column("loadgen CPU", justify="right")
    table.add_column("load 1m before/after", justify="right")
    labels = {"careflow": "careflow", "bare": "bare FastAPI + 1 INSERT"}
    for key, r in results.items():
        table.add_row(
            labels[key],
            fmt(r["req_per_s"]),
            fmt(r["p50_ms"], 1),
            fmt(r["p95_ms"], 1),
            fmt(r["p99_ms"], 1),
            str(r["errors"]),
            f"{r['stored']:,}",
            fmt(r["server_cpu_ms_per_req"], 2),
            f"{100 * r['loadgen_cpu_share']:.0f}%",
            r["load"],
        )
    c, b = results["careflow"], results["bare"]
    table.add_row(
        "careflow ÷ bare",
        f"{c['req_per_s'] / b['req_per_s']:.2f}",
        f"{c['p50_ms'] / b['p50_ms']:.2f}",
        f"{c['p95_ms'] / b['p95_ms']:.2f}",
        f"{c['p99_ms'] / b['p99_ms']:.2f}",
        "",
        "",
        f"{c['server_cpu_ms_per_req'] / b['server_cpu_ms_per_req']:.2f}",
        "",
        "",
    )
    console = Console(width=200)
    console.print(table)
    for key, r in results.items():
        if r["errors"]:
            console.print(f"{labels[key]} statuses: {r['statuses']}")
    console.print(f"logs: {workdir.path}")
    if args.json:
        print(json.dumps({"bench": "ingest", "db": db, "processes": processes, **results}))


if __name__ == "__main__":
    main()
