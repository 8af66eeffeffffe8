"""Fault drill 4: terminate the workers' LISTEN connections mid-run.

    python bench/drills/listen.py [--database-url URL] [--rate 3] [--baseline 30] [--after 60]

Two workers, a steady ``--rate`` of events, and a probe event every ``--probe-every`` s
timed from its POST to its execution's ``success``. After ``--baseline`` s the drill runs

    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
    WHERE query LIKE 'LISTEN%' AND datname = current_database()

(restricted to the drill's own database). The listener pings its connection with
``SELECT 1`` every 10 s, so a listener older than that shows ``SELECT 1`` rather than
``LISTEN …`` in ``pg_stat_activity``; when the statement above matches fewer connections
than there are workers, the drill also terminates the idle ``SELECT 1`` connections of its
database (the listeners' pings) and reports both counts. Then: every worker must listen
again (its log shows ``jobs.listening`` twice), no worker exits, every accepted event ends
``success``, and probe latency is back to normal within 30 s. Exits 1 when an invariant is
broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from benchkit.drill import (
    Cluster,
    Verdict,
    common_args,
    console,
    header,
    judge_latency,
    latency_drill,
    listener_rows,
)

BRIEF_SQL = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
)
PING_SQL = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT 1'"
    " AND state = 'idle' AND datname = current_database() AND pid <> pg_backend_pid()"
)


async def run(args: argparse.Namespace) -> Verdict:
    cluster = Cluster(args.database_url, pgbouncer=args.pgbouncer)
    verdict = Verdict()

    async def fault() -> dict[str, Any]:
        by_listen = len(await cluster.db.fetch(BRIEF_SQL))
        by_ping = 0
        if by_listen < args.workers:
            by_ping = len(await cluster.db.fetch(PING_SQL))
        return {"listen": by_listen, "ping": by_ping}

    try:
        await cluster.astart(args.workers)
        run_ = await latency_drill(
            cluster,
            rate=args.rate,
            baseline=args.baseline,
            after=args.after,
            probe_every=args.probe_every,
            fault=fault,
        )
        await cluster.wait_all_finished(len(run_.stats.accepted) + len(run_.probes), within=300)
        verdict.add("events posted (background)", run_.stats.describe())
        verdict.add(
            "connections terminated: query LIKE 'LISTEN%' / idle 'SELECT 1'",
            f"{run_.fault_info['listen']} / {run_.fault_info['ping']}",
        )
        verdict.check(
            "LISTEN connections terminated in all",
            run_.fault_info["listen"] + run_.fault_info["ping"],
            f"≥ {args.workers}",
            ok=run_.fault_info["listen"] + run_.fault_info["ping"] >= args.workers,
        )
        await asyncio.sleep(1)
        listener_rows(cluster, verdict)
        judge_latency(run_, verdict)
        verdict.check("workers or API exited on their own", cluster.unexpected_exits() or 0, 0)
        accepted = run_.stats.accepted | {f"probe-{i}" for i in range(len(run_.probes))}
        verdict.extend(await cluster.verify(accepted))
        return verdict
    finally:
        await cluster.db.close()
        cluster.stop()
        console.print(f"logs: {cluster.workdir.path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=3.0, help="background events per second")
    parser.add_argument("--baseline", type=float, default=30.0)
    parser.add_argument("--after", type=float, default=60.0)
    parser.add_argument("--probe-every", type=float, default=2.0)
    args = parser.parse_args()
    if args.pgbouncer == "polling":
        parser.error("--pgbouncer polling: the workers have no LISTEN connection to terminate")
    header("Drill 4: terminate the LISTEN connections", vars(args))
    verdict = asyncio.run(run(args))
    verdict.print("Drill 4: LISTEN connections terminated")
    if args.json:
        print(json.dumps({"drill": "listen", "failures": verdict.failures, "rows": verdict.rows}))
    sys.exit(verdict.exit_code())


if __name__ == "__main__":
    main()
