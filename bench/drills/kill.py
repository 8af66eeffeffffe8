"""Fault drill 1: SIGKILL a random worker every few seconds while events flow.

    python bench/drills/kill.py [--database-url URL] [--events 3000] [--workers 3]
                                [--kill-every 6] [--lease 10] [--timeout 600]

Starts ``careflow serve --no-worker`` and K workers, posts N ``patient.onboarded`` events
(rule: require_form → update_segment → send_email over SMTP to a sink), and every
``--kill-every`` s (±30 % jitter) sends SIGKILL to a random live worker and starts a
replacement at once, so at least K-1 (≥ 2) workers are alive at any moment. Kills continue
until every execution has finished. Then it checks: every accepted event has exactly one
execution and it is ``success``; one form per patient + template; one segment membership
per patient; every expected Message-ID reached the sink. It reports the raw duplicate
deliveries (a send cut off between the server's 250 and the worker's commit is repeated
with the same Message-ID). Exits 1 when an invariant is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from benchkit.drill import Cluster, Verdict, common_args, console, header, seed


async def run(args: argparse.Namespace) -> Verdict:
    rng = seed(args.seed)
    cluster = Cluster(
        args.database_url,
        pgbouncer=args.pgbouncer,
        extra_env={"CAREFLOW_JOB_LEASE_SECONDS": str(args.lease)},
    )
    kills: list[float] = []
    try:
        await cluster.astart(args.workers)
        started = time.monotonic()
        deadline = started + args.timeout
        done = asyncio.Event()

        async def killer() -> None:
            next_kill = time.monotonic() + args.kill_every
            while not done.is_set() and time.monotonic() < deadline and len(kills) < args.max_kills:
                await asyncio.sleep(0.2)
                if time.monotonic() < next_kill:
                    continue
                alive = cluster.alive_workers()
                if len(alive) >= args.workers:
                    victim = rng.choice(alive)
                    cluster.signal_worker(victim, signal.SIGKILL)
                    kills.append(time.monotonic() - started)
                    cluster.start_worker()
                next_kill = time.monotonic() + args.kill_every * rng.uniform(0.7, 1.3)

        kill_task = asyncio.create_task(killer())
        stats = await cluster.post_events(
            range(args.events), concurrency=args.post_concurrency, deadline=deadline
        )
        posted_at = time.monotonic() - started
        await cluster.wait_all_finished(
            len(stats.accepted), within=max(1.0, deadline - time.monotonic()), stall=120
        )
        finished_at = time.monotonic() - started
        done.set()
        await kill_task
        verdict = Verdict()
        verdict.add("events posted", stats.describe())
        verdict.add("workers (concurrency 8 each), lease", f"{args.workers}, {args.lease:g} s")
        verdict.add(
            "SIGKILLs (each followed by a replacement)",
            f"{len(kills)} over {kills[-1] if kills else 0:.0f} s",
        )
        verdict.add(
            "first post → last post / all finished", f"{posted_at:.0f} s / {finished_at:.0f} s"
        )
        verdict.check("workers or API exited on their own", cluster.unexpected_exits() or 0, 0)
        verdict.extend(await cluster.verify(stats.accepted))
        rescued = sum(
            e.get("count", 0)
            for name in cluster.workers
            for e in cluster.log_events(name)
            if e.get("event") == "jobs.leases_rescued"
        )
        verdict.add("jobs rescued after a lease ran out (worker logs)", f"{rescued:,}")
        verdict.check("kills performed", len(kills), "≥ 1", ok=len(kills) >= 1)
        return verdict
    finally:
        await cluster.db.close()
        cluster.stop()
        console.print(f"logs: {cluster.workdir.path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=3, help="kept alive (≥ 3: 2 survive a kill)")
    parser.add_argument("--kill-every", type=float, default=6.0, help="seconds between kills")
    parser.add_argument("--max-kills", type=int, default=200)
    parser.add_argument("--lease", type=float, default=10.0, help="CAREFLOW_JOB_LEASE_SECONDS")
    parser.add_argument("--post-concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=600.0, help="max seconds in all")
    args = parser.parse_args()
    header("Drill 1: SIGKILL a random worker every few seconds", vars(args))
    verdict = asyncio.run(run(args))
    verdict.print(f"Drill 1: kill -9 workers, {args.events:,} events")
    if args.json:
        print(json.dumps({"drill": "kill", "failures": verdict.failures, "rows": verdict.rows}))
    sys.exit(verdict.exit_code())


if __name__ == "__main__":
    main()
