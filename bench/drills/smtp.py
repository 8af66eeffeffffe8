"""Fault drill 3: the SMTP server is down for about a minute while events keep coming.

    python bench/drills/smtp.py [--database-url URL] [--rate 4] [--before 20] [--outage 60]
                                [--after 20] [--backoff-base 2] [--max-attempts 10]

Two workers, ``CAREFLOW_JOB_BACKOFF_BASE_SECONDS`` and ``CAREFLOW_JOB_MAX_ATTEMPTS`` from the
options. Events are posted at a steady rate; after ``--before`` s the sink is stopped,
after ``--outage`` s more it is started again on the same port, and posting goes on for
``--after`` s. Every execution must end ``success`` with its email at the sink: the sends
that failed during the outage retry with backoff and succeed once it is back. The drill
also samples the jobs table during the outage (attempts and ``max_attempts`` of the queued
``run_action`` jobs). Exits 1 when an invariant is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from benchkit.drill import Cluster, Verdict, common_args, console, header


async def run(args: argparse.Namespace) -> Verdict:
    cluster = Cluster(
        args.database_url,
        pgbouncer=args.pgbouncer,
        extra_env={
            "CAREFLOW_JOB_BACKOFF_BASE_SECONDS": str(args.backoff_base),
            "CAREFLOW_JOB_MAX_ATTEMPTS": str(args.max_attempts),
        },
    )
    verdict = Verdict()
    try:
        await cluster.astart(2)
        started = time.monotonic()
        total = args.before + args.outage + args.after
        n = int(args.rate * total)
        posting = asyncio.create_task(
            cluster.post_events(
                range(n), concurrency=4, rate=args.rate, deadline=started + total + 30
            )
        )
        await asyncio.sleep(max(0.0, started + args.before - time.monotonic()))
        cluster.sink.stop()
        down_at = time.monotonic()
        max_attempts_seen, max_attempts_configured = 0, set()
        waiting = 0
        while time.monotonic() - down_at < args.outage:
            rows = await cluster.db.fetch(
                "SELECT attempts, max_attempts FROM jobs WHERE kind = 'run_action' AND attempts > 0"
            )
            for r in rows:
                max_attempts_seen = max(max_attempts_seen, r[0])
                max_attempts_configured.add(r[1])
            waiting = max(waiting, len(rows))
            await asyncio.sleep(1.0)
        cluster.sink.start()
        up_at = time.monotonic()
        sent_during = await cluster.db.val("SELECT count(*) FROM messages WHERE status <> 'sent'")
        stats = await posting
        waited = await cluster.wait_all_finished(
            len(stats.accepted), within=args.timeout, stall=args.stall
        )
        verdict.add("events posted", stats.describe())
        verdict.add(
            "backoff base / max attempts (env)", f"{args.backoff_base:g} s / {args.max_attempts}"
        )
        verdict.add("sink down", f"{up_at - down_at:.0f} s (from t={down_at - started:.0f} s)")
        verdict.add("run_action jobs retrying at once (max, during outage)", str(waiting))
        verdict.add("highest attempts seen during outage", str(max_attempts_seen))
        verdict.check(
            "max_attempts stored on retried jobs = CAREFLOW_JOB_MAX_ATTEMPTS",
            ", ".join(str(x) for x in sorted(max_attempts_configured)) or "-",
            str(args.max_attempts),
        )
        verdict.add("message rows not sent at sink restart", str(sent_during))
        verdict.add("sink back → all executions finished", f"{time.monotonic() - up_at:.0f} s")
        verdict.add("waited for the last executions", f"{waited:.0f} s")
        failed = await cluster.db.fetch(
            "SELECT error, count(*) FROM execution_actions WHERE status = 'failure'"
            " GROUP BY error ORDER BY 2 DESC LIMIT 3"
        )
        for r in failed:
            verdict.add("failed actions: " + str(r[0])[:60], str(r[1]))
        verdict.check("workers or API exited on their own", cluster.unexpected_exits() or 0, 0)
        verdict.extend(await cluster.verify(stats.accepted))
        return verdict
    finally:
        await cluster.db.close()
        cluster.stop()
        console.print(f"logs: {cluster.workdir.path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.add_argument("--rate", type=float, default=4.0, help="events per second")
    parser.add_argument("--before", type=float, default=20.0)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--after", type=float, default=20.0)
    parser.add_argument("--backoff-base", type=float, default=2.0)
    parser.add_argument("--max-attempts", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=400.0, help="max wait after posting")
    parser.add_argument("--stall", type=float, default=150.0)
    args = parser.parse_args()
    header("Drill 3: SMTP server down for a minute", vars(args))
    verdict = asyncio.run(run(args))
    verdict.print(f"Drill 3: SMTP outage {args.outage:g} s")
    if args.json:
        print(json.dumps({"drill": "smtp", "failures": verdict.failures, "rows": verdict.rows}))
    sys.exit(verdict.exit_code())


if __name__ == "__main__":
    main()
