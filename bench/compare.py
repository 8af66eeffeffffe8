"""careflow beside its peers, in one invocation: one table of ratios against targets.

    python bench/compare.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/careflow_bench [--quick] [--json]
    python bench/run_all.py --compare --database-url ...   (the same: "the --compare mode")

The peers are installed into their own environment (``bench/.peers``), never careflow's,
before anything is timed. Each careflow figure and its peer's are measured one right after
the other, so each ratio (careflow ÷ peer) is taken on the same machine state. Every figure
comes from a script of its own, run as a process with ``--json``:

1. queue: ``perf/queue.py`` no-op drain, 2 worker processes, vs pgqueuer 1.6.0 draining
   as many no-op jobs with 2 processes (``peers/pgqueuer_drain.py --peer-only``);
2. end to end: ``perf/e2e.py --drain`` executions/s (events posted first, then drained by
   2 workers) vs Celery 5 + Redis tasks that write the same rows and send the same email by
   hand, 2 worker processes x 8, also drained (``peers/celery_drain.py --work-database-url``);
3. ingestion: ``perf/ingest.py``, careflow's ``POST /v1/events`` vs the bare FastAPI +
   asyncpg one-INSERT endpoint, 2 processes and 64 connections each, plus careflow's p99;
4. conditions: 1,000 rules on one trigger, careflow vs the hand-written closures of
   ``benchkit.workload`` and zen-engine 2.1.3 (``peers/zen_conditions.py``).

``--quick`` uses small sizes (a smoke run of a few minutes); ``--json`` also prints every
figure as one JSON line. The database is created if missing and its ``public`` schema is
dropped and re-created; ``<name>_peers`` is pgqueuer's; Redis db 9 is Celery's scratch db.
A comparison that fails is shown as failed and the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from benchkit.common import REFUSED_DATABASES, loadavg, peer_python, plain_pg_dsn, run_json_script

SIZES = {
    "full": {"jobs": 50_000, "executions": 5000, "seconds": 15, "events": 2000},
    "quick": {"jobs": 10_000, "executions": 500, "seconds": 8, "events": 500},
}
RULES = 1000
PROCESSES = 2  # worker or API processes on every side
CONNECTIONS = 64  # HTTP connections of the ingestion load
# Prefork children per Celery process: careflow's workers have 8 slots, and each task waits
# on its commits and its SMTP exchange (2 x 2 left the cores idle: 393 against 461 tasks/s).
CELERY_CONCURRENCY = 8

progress = Console(stderr=True)


@dataclass
class Target:
    text: str
    met: Callable[[float, float], bool]  # (careflow ÷ peer, careflow's figure) -> met?


AT_LEAST_1X = Target(">= 1.0x", lambda ratio, _: ratio >= 1.0)
AT_LEAST_4X = Target(">= 4.0x", lambda ratio, _: ratio >= 4.0)
P99_50_MS = Target("<= 50 ms (careflow)", lambda _, ours: ours <= 50.0)


@dataclass
class Row:
    comparison: str
    careflow: float | None
    peer: str
    peer_figure: float | None
    unit: str
    ratio: float | None  # careflow ÷ peer
    target: str
    met: bool | None
    error: str | None = None


def measured(
    comparison: str, ours: float, peer: str, theirs: float, unit: str, target: Target
) -> Row:
    ratio = ours / theirs
    return Row(comparison, ours, peer, theirs, unit, ratio, target.text, target.met(ratio, ours))


def failed(comparison: str, peer: str, unit: str, target: Target, error: Exception) -> Row:
    progress.print(f"[red]{comparison}: failed[/red]\n{error}")
    return Row(comparison, None, peer, None, unit, None, target.text, None, str(error)[-500:])


def ensure_database(database_url: str) -> None:
    """Create the bench database when it does not exist yet."""
    server, name = plain_pg_dsn(database_url).rsplit("/", 1)
    name = name.split("?", 1)[0]
    if name in REFUSED_DATABASES:
        raise SystemExit(f"refusing to use database {name!r}: use a bench database")

    async def create() -> None:
        conn = await asyncpg.connect(f"{server}/postgres")
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())


# -- the four comparisons: each returns its rows and keeps its raw figures in ``raw`` ------


def compare_queue(url: str, size: dict[str, int], raw: dict[str, Any]) -> list[Row]:
    label = f"job queue: no-op drain, {size['jobs']:,} jobs, {PROCESSES} processes, PostgreSQL"
    peer = "pgqueuer 1.6.0 (drain mode)"
    jobs = ("--jobs", str(size["jobs"]), "--workers", str(PROCESSES))
    try:
        raw["queue"] = run_json_script("perf/queue.py", "--database-url", url, *jobs)
        raw["pgqueuer"] = run_json_script(
            "peers/pgqueuer_drain.py", "--database-url", url, *jobs, "--peer-only"
        )
    except Exception as error:
        return [failed(label, peer, "jobs/s", AT_LEAST_1X, error)]
    peer = f"pgqueuer 1.6.0 (batch {raw['pgqueuer']['batch_size']}, drain mode)"
    ours, theirs = raw["queue"]["jobs_per_s"], raw["pgqueuer"]["jobs_per_s"]
    return [measured(label, ours, peer, theirs, "jobs/s", AT_LEAST_1X)]


def compare_e2e(url: str, size: dict[str, int], raw: dict[str, Any]) -> list[Row]:
    label = (
        f"end to end: executions/s ({size['executions']:,} events queued, then drained by "
        f"{PROCESSES} workers, SMTP) vs tasks doing the same writes and email by hand"
    )
    peer = f"Celery + Redis + psycopg, {PROCESSES} x {CELERY_CONCURRENCY} (prefork)"
    try:
        raw["e2e"] = run_json_script(
            "perf/e2e.py",
            *("--database-url", url),
            *("--events", str(size["executions"])),
            *("--workers", str(PROCESSES)),
            "--drain",  # events first, then the workers, as Celery's tasks are drained
            timeout=600,
        )
        raw["celery_work"] = run_json_script(
            "peers/celery_drain.py",
            *("--tasks", str(size["executions"])),
            *("--workers", str(PROCESSES)),
            *("--concurrency", str(CELERY_CONCURRENCY)),
            *("--work-database-url", url),
            timeout=900,
        )
    except Exception as error:
        return [failed(label, peer, "/s", AT_LEAST_1X, error)]
    celery = raw["celery_work"]
    peer = f"Celery {celery['celery']} + Redis + psycopg, {PROCESSES} x {CELERY_CONCURRENCY}"
    # Like for like: each side timed from its first unit of work to its last (Celery's first
    # task done; careflow's first execution started), with no process start-up in either.
    steady = measured(
        label, raw["e2e"]["steady_per_s"], peer, celery["tasks_per_s"], "/s", AT_LEAST_1X
    )
    # For reference, no target: both counting their workers' start-up.
    ours, theirs = raw["e2e"]["executions_per_s"], celery["tasks_per_s_with_startup"]
    with_startup = Row(
        "the same, each counting its workers' start-up (reference)",
        *(ours, peer, theirs, "/s", ours / theirs, "-", None),
    )
    return [steady, with_startup]


def compare_ingest(url: str, size: dict[str, int], raw: dict[str, Any]) -> list[Row]:
    label = f"POST /v1/events, PostgreSQL, {PROCESSES} processes, {CONNECTIONS} connections"
    peer = "bare FastAPI + asyncpg, 1 INSERT"
    try:
        raw["ingest"] = run_json_script(
            "perf/ingest.py",
            *("--database-url", url),
            *("--processes", str(PROCESSES)),
            *("--concurrency", str(CONNECTIONS)),
            *("--seconds", str(size["seconds"])),
            "--warmup",
            "1" if size["seconds"] < 10 else "2",
            timeout=600,
        )
    except Exception as error:
        return [
            failed(f"{label}: req/s", peer, "req/s", AT_LEAST_1X, error),
            failed(f"{label}: p99", peer, "ms", P99_50_MS, error),
        ]
    ours, theirs = raw["ingest"]["careflow"], raw["ingest"]["bare"]
    return [
        measured(
            f"{label}: req/s", ours["req_per_s"], peer, theirs["req_per_s"], "req/s", AT_LEAST_1X
        ),
        measured(f"{label}: p99", ours["p99_ms"], peer, theirs["p99_ms"], "ms", P99_50_MS),
    ]


def compare_conditions(size: dict[str, int], raw: dict[str, Any]) -> list[Row]:
    label = f"conditions: {RULES:,} rules on one trigger x {size['events']:,} events"
    hand, zen = "hand-written closures", "zen-engine 2.1.3, compiled expressions"
    try:
        raw["conditions"] = rates = run_json_script(
            "peers/zen_conditions.py", "--rules", str(RULES), "--events", str(size["events"])
        )
    except Exception as error:
        return [
            failed(label, hand, "evals/s", AT_LEAST_1X, error),
            failed(label, zen, "evals/s", AT_LEAST_4X, error),
        ]
    rows = []
    for key, name in (("index", "rule index"), ("compiled", "compiled closures")):
        ours = rates[key]
        rows += [
            measured(f"{label}, {name}", ours, hand, rates["hand_written"], "evals/s", AT_LEAST_1X),
            measured(f"{label}, {name}", ours, zen, rates["zen"], "evals/s", AT_LEAST_4X),
        ]
    return rows


# -- output -------------------------------------------------------------------------------


def figure(value: float | None, unit: str) -> str:
    if value is None:
        return "failed"
    return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def print_table(rows: list[Row], title: str, caption: str) -> None:
    table = Table(title=title, caption=caption)
    table.add_column("comparison", max_width=46)
    table.add_column("careflow", justify="right")
    table.add_column("peer", max_width=30)
    table.add_column("peer figure", justify="right")
    table.add_column("ratio (careflow ÷ peer)", justify="right")
    table.add_column("target")
    table.add_column("met?")
    for r in rows:
        met = {True: "[green]yes[/green]", False: "[red]no[/red]", None: "-"}[r.met]
        table.add_row(
            r.comparison,
            figure(r.careflow, r.unit),
            r.peer,
            figure(r.peer_figure, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
            met,
        )
    Console(width=180).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", required=True, help="careflow's PostgreSQL bench database"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run of a few minutes"
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    if not args.database_url.startswith("postgresql"):
        raise SystemExit("the comparisons run on PostgreSQL: pass a postgresql+asyncpg:// URL")
    size = SIZES["quick" if args.quick else "full"]
    ensure_database(args.database_url)

    progress.print("peers: pgqueuer, zen-engine, Celery in bench/.peers (installed if missing)")
    peer_python("pgqueuer", "zen", "celery", "psycopg")
    load_before = loadavg()
    raw: dict[str, Any] = {}
    rows: list[Row] = []
    steps = [
        ("conditions", lambda: compare_conditions(size, raw)),
        ("job queue", lambda: compare_queue(args.database_url, size, raw)),
        ("end to end vs Celery", lambda: compare_e2e(args.database_url, size, raw)),
        ("ingestion", lambda: compare_ingest(args.database_url, size, raw)),
    ]
    for number, (name, step) in enumerate(steps, 1):
        progress.print(f"[{number}/{len(steps)}] {name} (load {loadavg()})")
        rows += step()
    load = f"{load_before} / {loadavg()}"

    mode = "quick sizes" if args.quick else "full sizes"
    print_table(
        rows,
        title=f"careflow beside its peers ({mode}; each pair measured back to back)",
        caption=f"load average (1 min) before / after: {load} on 2 shared cores",
    )
    if args.json:
        result = {
            "bench": "compare",
            "quick": args.quick,
            "sizes": size,
            "load": load,
            "rows": [asdict(r) for r in rows],
            "raw": raw,
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
