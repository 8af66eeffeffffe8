"""Celery 5 + Redis draining tasks: the peer of careflow's end-to-end rate.

    python bench/peers/celery_drain.py [--tasks 20000] [--workers 2] [--concurrency 2]
                                       [--broker redis://127.0.0.1:6379/9] [--json]
                                       [--work-database-url postgresql+asyncpg://…]

Celery (``celery[redis]==5.*``) is installed into its own environment (``bench/.peers``)
and its app is ``bench/peers/celery_tasks.py``. The broker's Redis db is a scratch db: it is
flushed before and after (and refused if it holds keys that are not the benchmark's).
N no-op tasks (``ignore_result``) are enqueued first from a separate process; then W
``celery worker --pool prefork --concurrency C`` processes start, and tasks/s is timed from
the first task done to the N-th, by a Redis counter each task INCRs.

``--work-database-url URL`` runs ``celery_tasks.work`` tasks instead: careflow's end-to-end
side effects written by hand (an execution, a form and an episode in one transaction, an
email to an aiosmtpd sink, the execution marked success), with psycopg 3, against the
given PostgreSQL database's ``celery_peer`` schema. That is the end-to-end target's peer:
``bench/compare.py`` runs this script so, with ``--json``. The no-op tasks were the peer of
a retired target (a full execution against an empty task); ``perf/ceiling.py`` still
shows them beside its ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
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
    Workdir,
    children,
    free_port,
    loadavg,
    peer_python,
    plain_pg_dsn,
    tree_cpu_seconds,
)
from benchkit.workload import Sink

PEER = str(BENCH_DIR / "peers" / "celery_tasks.py")


def _peer(python: str, env: dict[str, str], *args: str, timeout: float = 120) -> dict[str, Any]:
    out = subprocess.run(
        [python, PEER, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"celery_tasks.py {args[0]} failed:\n{out.stdout}{out.stderr[-2000:]}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return dict(json.loads(lines[-1])) if lines else {}


def celery_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import celery; print(celery.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def celery_drain(
    tasks: int,
    workers: int = 2,
    concurrency: int = 2,
    broker: str = "redis://127.0.0.1:6379/9",
    timeout: float = 300.0,
    *,
    kind: str = "noop",
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Enqueue ``tasks`` tasks of ``kind`` (``peers/celery_tasks.py``), then time ``workers``
    Celery workers draining them."""
    if not broker.startswith("redis://127.0.0.1:"):
        raise SystemExit("the broker must be a Redis db on 127.0.0.1")
    python = str(peer_python("celery", *(["psycopg"] if kind == "work" else [])))
    env = {**os.environ, **(extra_env or {}), "CELERY_PEER_BROKER": broker}
    env["PYTHONUNBUFFERED"] = "1"
    _peer(python, env, "flush")
    workdir = Workdir()
    try:
        enqueued = _peer(python, env, "enqueue", str(tasks), kind, timeout=600)
        if enqueued["queued"] != tasks:
            raise RuntimeError(f"{enqueued['queued']} of {tasks} tasks in the queue")
        load_before = loadavg()
        with children(workdir) as kids:
            waiter = kids.start("wait", [python, PEER, "wait", str(tasks), str(timeout), "30"], env)
            launched_at = time.time()
            procs = [
                kids.start(
                    f"celery{i}",
                    [
                        *(python, "-m", "celery", "-A", "celery_tasks", "worker"),
                        *("--pool", "prefork", "--concurrency", str(concurrency)),
                        *("--hostname", f"bench{i}@%h", "--loglevel", "WARNING"),
                        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
                    ],
                    env,
                    cwd=BENCH_DIR / "peers",
                )
                for i in range(workers)
            ]
            cpu0 = sum(tree_cpu_seconds(p.pid) for p in procs)
            deadline = time.monotonic() + timeout + 30
            while waiter.poll() is None and time.monotonic() < deadline:
                if any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"a Celery worker exited early: logs in {workdir.path}")
                time.sleep(0.2)
            cpu = sum(tree_cpu_seconds(p.pid) for p in procs) - cpu0
            load_after = loadavg()
            for proc in procs:
                kids.stop_tree(proc)
            kids.stop(waiter, timeout=5)
        lines = [
            line for line in workdir.log("wait").read_text().splitlines() if line.startswith("{")
        ]
        if not lines:
            raise RuntimeError(f"the Celery waiter printed nothing: logs in {workdir.path}")
        waited = json.loads(lines[-1])
    finally:
        _peer(python, env, "flush")

    done, first_at, done_at = waited["done"], waited["first_at"], waited["done_at"]
    if done_at is None:
        raise RuntimeError(f"Celery ran {done} of {tasks} tasks in time: logs in {workdir.path}")
    return {
        "bench": "celery",
        "celery": celery_version(python),
        "tasks": tasks,
        "workers": workers,
        "concurrency": concurrency,
        "enqueue_seconds": enqueued["enqueue_seconds"],
        "startup_seconds": first_at - launched_at,
        "drain_seconds": done_at - first_at,
        # From the first task done to the last, as perf/queue.py times careflow's workers.
        "tasks_per_s": tasks / (done_at - first_at),
        "tasks_per_s_with_startup": tasks / (done_at - launched_at),
        "worker_cpu_ms_per_task": 1000 * cpu / tasks,
        "done": done,
        "load": f"{load_before} / {load_after}",
    }


def celery_work_drain(
    tasks: int, database_url: str, workers: int = 2, concurrency: int = 2
) -> dict[str, Any]:
    """Celery workers running ``celery_tasks.work``: careflow's end-to-end side effects
    written by hand (an execution, a form, an episode, an email, the execution finished)
    against the same PostgreSQL and an aiosmtpd sink like ``perf/e2e.py``'s. Checks that
    every task wrote its rows and sent one email with its own Message-ID."""
    from aiosmtpd.controller import Controller

    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    python = str(peer_python("celery", "psycopg"))
    env = {"CELERY_PEER_PG": plain_pg_dsn(database_url), "CELERY_PEER_SMTP": f"127.0.0.1:{port}"}
    try:
        _peer(python, {**os.environ, **env}, "setup-work")
        result = celery_drain(tasks, workers, concurrency, kind="work", extra_env=env)
        rows = _peer(python, {**os.environ, **env}, "work-done")
    finally:
        controller.stop()
    duplicates = sum(c - 1 for c in sink.message_ids.values() if c > 1)
    if (
        rows != {"success": tasks, "forms": tasks, "episodes": tasks}
        or len(sink.message_ids) != tasks
    ):
        raise RuntimeError(f"the work tasks did not all finish: {rows}, {sink.messages} emails")
    return {**result, "emails": sink.messages, "duplicate_message_ids": duplicates, **rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2, help="celery worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork children each")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/9", help="a scratch db")
    parser.add_argument("--timeout", type=float, default=300.0, help="max seconds of draining")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument(
        "--work-database-url",
        default=None,
        help="run the work tasks (careflow's side effects by hand) against this PostgreSQL "
        "database (its celery_peer schema is dropped and re-created) instead of no-ops",
    )
    args = parser.parse_args()
    if args.work_database_url:
        r = celery_work_drain(args.tasks, args.work_database_url, args.workers, args.concurrency)
        what = "work tasks (an execution, a form, an episode, an email)"
    else:
        r = celery_drain(args.tasks, args.workers, args.concurrency, args.broker, args.timeout)
        what = "no-op tasks"

    table = Table(title=f"Celery {r['celery']} + Redis: {args.tasks:,} {what}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("enqueue (apply_async, one producer)", f"{r['enqueue_seconds']:.2f} s")
    table.add_row("workers x prefork concurrency", f"{args.workers} x {args.concurrency}")
    table.add_row("tasks done", f"{r['done']:,} of {args.tasks:,}")
    table.add_row("worker start → first task done", f"{r['startup_seconds']:.2f} s")
    table.add_row("first task → last task done", f"{r['drain_seconds']:.2f} s")
    table.add_row("tasks/s", f"{r['tasks_per_s']:,.0f}")
    table.add_row("tasks/s counting worker start-up", f"{r['tasks_per_s_with_startup']:,.0f}")
    table.add_row(
        "worker CPU per task (all processes, with start-up)",
        f"{r['worker_cpu_ms_per_task']:.2f} ms",
    )
    if "emails" in r:
        table.add_row(
            "emails at the sink / duplicates", f"{r['emails']:,} / {r['duplicate_message_ids']}"
        )
    table.add_row("load average (1 min) before / after", r["load"])
    Console().print(table)
    if args.json:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
