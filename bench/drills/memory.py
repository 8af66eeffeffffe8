"""Drill 6: worker memory over a soak at a steady, moderate event rate.

    python bench/drills/memory.py [--database-url URL] [--rate 8] [--seconds 300]
                                  [--warmup 60] [--sample-every 5]

Two workers and the API; events posted at ``--rate`` per second for ``--seconds``. Every
``--sample-every`` s the drill reads ``VmRSS`` from ``/proc/<pid>/status`` of each worker and
of the API process. It reports start, end of warm-up, peak and end RSS per process, and
checks that every sample after the warm-up stays within ±10 % of the RSS at the end of the
warm-up. It also checks that the workers kept up (no growing backlog) and the usual
invariants. Exits 1 when an invariant is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from benchkit.drill import Cluster, Verdict, common_args, console, header, vm_rss_kb


def mb(kb: int) -> str:
    return f"{kb / 1024:.1f} MB"


async def run(args: argparse.Namespace) -> Verdict:
    cluster = Cluster(args.database_url, pgbouncer=args.pgbouncer)
    verdict = Verdict()
    try:
        await cluster.astart(2)
        procs = {"serve": cluster.serve.pid} | {n: p.pid for n, p in cluster.workers.items()}
        samples: dict[str, list[tuple[float, int]]] = {n: [] for n in procs}
        backlog: list[tuple[float, int]] = []
        started = time.monotonic()
        n = int(args.rate * args.seconds)
        posting = asyncio.create_task(
            cluster.post_events(
                range(n), concurrency=4, rate=args.rate, deadline=started + args.seconds + 30
            )
        )
        while not posting.done() and time.monotonic() - started < args.seconds + 30:
            t = time.monotonic() - started
            for name, pid in procs.items():
                rss = vm_rss_kb(pid)
                if rss is not None:
                    samples[name].append((t, rss))
            queued = await cluster.db.try_val("SELECT count(*) FROM jobs")
            if queued is not None:
                backlog.append((t, int(queued)))
            await asyncio.sleep(args.sample_every)
        stats = await posting
        await cluster.wait_all_finished(len(stats.accepted), within=300)
        verdict.add("events posted", stats.describe())
        verdict.add(
            "soak", f"{args.seconds:.0f} s at {args.rate:g} events/s, warm-up {args.warmup:.0f} s"
        )
        late_backlog = [q for t, q in backlog if t >= args.warmup]
        verdict.add(
            "jobs in the table after warm-up: max / last",
            f"{max(late_backlog, default=0)} / {late_backlog[-1] if late_backlog else 0}",
        )
        for name, series in samples.items():
            if not series:
                verdict.check(f"{name}: RSS samples", 0, "> 0", ok=False)
                continue
            after = [(t, r) for t, r in series if t >= args.warmup]
            ref = after[0][1] if after else series[-1][1]
            lo = min(r for _, r in after) if after else ref
            hi = max(r for _, r in after) if after else ref
            peak = max(r for _, r in series)
            verdict.add(
                f"{name} RSS start / warm-up end / peak / end",
                " / ".join(mb(x) for x in (series[0][1], ref, peak, series[-1][1])),
            )
            worst = max(abs(hi - ref), abs(ref - lo)) / ref * 100
            verdict.check(
                f"{name}: after warm-up within ±10 % of {mb(ref)} ({len(after)} samples)",
                f"{(lo - ref) / ref * 100:+.1f} % .. {(hi - ref) / ref * 100:+.1f} %",
                "",
                ok=worst <= 10.0,
            )
        verdict.check("workers or API exited on their own", cluster.unexpected_exits() or 0, 0)
        verdict.extend(await cluster.verify(stats.accepted))
        if args.json:
            print(json.dumps({"samples": samples, "backlog": backlog}))
        return verdict
    finally:
        await cluster.db.close()
        cluster.stop()
        console.print(f"logs: {cluster.workdir.path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.add_argument("--rate", type=float, default=8.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--warmup", type=float, default=60.0)
    parser.add_argument("--sample-every", type=float, default=5.0)
    args = parser.parse_args()
    header("Drill 6: worker RSS over a soak", vars(args))
    verdict = asyncio.run(run(args))
    verdict.print(f"Drill 6: memory soak, {args.seconds:.0f} s at {args.rate:g} events/s")
    if args.json:
        print(json.dumps({"drill": "memory", "failures": verdict.failures, "rows": verdict.rows}))
    sys.exit(verdict.exit_code())


if __name__ == "__main__":
    main()
