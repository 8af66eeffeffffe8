"""Fairness drill: one organisation floods, another's events still finish within a second.

    python bench/drills/fairness.py [--database-url URL] [--events 100000] [--workers 2]
                                    [--concurrency 32] [--json]

On PostgreSQL, ``careflow serve --no-worker`` and ``--workers`` ``careflow worker``
processes; organisations 1 (A) and 2 (B) each have one rule: ``patient.onboarded`` →
``send_email`` to the drill's aiosmtpd sink.

1. **A alone**: A posts ``--events`` events as fast as ``--concurrency`` HTTP connections go;
   its drain time is from its first POST to its last execution's ``finished_at``, its rate
   the events over that time.
2. **A with B**: the schema is reset and the same flood runs again while B posts one event
   a second throughout (from before A's first POST until A's last execution finished). B's
   latency is each event's send time (just before its POST) to its execution's
   ``finished_at``.

It prints B's p50 / p99 latency, A's drain time and rate in both runs, and the ratios
against the targets: B's p99 ≤ 1 s and ≤ 2 % of A's drain time; A's rate with B within 10 %
of its rate alone. Also the largest backlog of due jobs seen (sampled every 0.5 s), which
says whether the flood outran the workers. Every invariant of the other drills is checked
too (each accepted event one execution, ``success``, one email). Exits 1 when a target or an
invariant is missed.

Run it with PostgreSQL's autovacuum on (its default): the tables grow by ``--events`` rows
each, and without ANALYZE the planner keeps the plans it chose for empty tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

import httpx

from benchkit.common import mint_token, percentile
from benchkit.drill import (
    Cluster,
    Verdict,
    common_args,
    console,
    header,
    onboarded,
)

EMAIL_RULE = {
    "name": "Onboarding: welcome",
    "description": "fairness drill rule",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [{"type": "send_email", "template": "welcome_patient"}],
}
B_ORG = 2
B_RATE = 1.0  # events a second


@dataclass
class Run:
    events: int
    drain_seconds: float = 0.0
    b_latencies: list[float] = field(default_factory=list)
    b_sent: int = 0
    b_unfinished: int = 0
    max_backlog: int = 0
    accepted: set[str] = field(default_factory=set)

    @property
    def rate(self) -> float:
        return self.events / self.drain_seconds if self.drain_seconds else 0.0


async def post_b(cluster: Cluster, token: str, stop: asyncio.Event, sent: dict[str, float]) -> None:
    """One event of organisation B a second until ``stop``; each one's send time (epoch)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=cluster.base, headers=headers, timeout=30) as client:
        n = 0
        started = time.monotonic()
        while not stop.is_set():
            body = onboarded("b", n)
            sent_at = time.time()
            response = await client.post("/v1/events", json=body)
            if response.status_code in (200, 202):
                sent[body["event_id"]] = sent_at
            n += 1
            await asyncio.sleep(max(0.0, started + n / B_RATE - time.monotonic()))


async def sample_backlog(cluster: Cluster, stop: asyncio.Event, run: Run) -> None:
    while not stop.is_set():
        due = await cluster.db.try_val(
            "SELECT count(*) FROM jobs WHERE status = 'queued' AND run_at <= now()"
        )
        run.max_backlog = max(run.max_backlog, int(due or 0))
        await asyncio.sleep(0.5)


async def wait_for_a(cluster: Cluster, events: int, within: float) -> None:
    deadline = time.monotonic() + within
    sql = "SELECT count(*) FROM executions WHERE organization_id = 1 AND finished_at IS NOT NULL"
    while time.monotonic() < deadline:
        if int(await cluster.db.try_val(sql) or 0) >= events:
            return
        await asyncio.sleep(0.25)
    raise RuntimeError(f"organisation A's {events} executions did not finish in {within:.0f} s")


async def verify(cluster: Cluster, accepted: set[str], label: str) -> Verdict:
    """Each accepted event has one execution, ``success``; one email each at the sink."""
    v = Verdict()
    rows = await cluster.db.fetch(
        "SELECT e.event_id, count(x.id) AS n, count(*) FILTER (WHERE x.status = 'success') AS ok"
        " FROM events e LEFT JOIN executions x ON x.event_pk = e.id GROUP BY e.event_id"
    )
    stored = {r["event_id"] for r in rows}
    v.check(f"{label}: accepted events not stored", len(accepted - stored), 0)
    v.check(f"{label}: events without exactly one execution", sum(r["n"] != 1 for r in rows), 0)
    v.check(f"{label}: executions not success", sum(r["ok"] != 1 for r in rows), 0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(cluster.sink.snapshot().values()) < len(rows):
        await asyncio.sleep(0.2)
    seen = cluster.sink.snapshot()
    v.check(
        f"{label}: emails at the sink / events",
        f"{sum(seen.values()):,} / {len(rows):,}",
        "equal",
        ok=sum(seen.values()) == len(rows) == len(seen),
    )
    dead = await cluster.db.val("SELECT count(*) FROM jobs WHERE status = 'dead'")
    v.check(f"{label}: jobs left dead", int(dead), 0)
    return v


async def one_run(args: argparse.Namespace, *, with_b: bool) -> tuple[Run, Verdict]:
    cluster = Cluster(args.database_url, rule=EMAIL_RULE, pgbouncer=args.pgbouncer)
    run = Run(events=args.events)
    try:
        await cluster.astart(args.workers)
        b_admin = await asyncio.to_thread(mint_token, args.database_url, "admin", B_ORG)
        b_service = await asyncio.to_thread(mint_token, args.database_url, "service", B_ORG)
        async with httpx.AsyncClient(base_url=cluster.base, timeout=30) as client:
            created = await client.post(
                "/v1/automations/rules",
                json=EMAIL_RULE,
                headers={"Authorization": f"Bearer {b_admin}"},
            )
            if created.status_code != 201:
                raise RuntimeError(f"B's rule not created: {created.status_code}")
        stop = asyncio.Event()
        sent: dict[str, float] = {}
        background = [asyncio.create_task(sample_backlog(cluster, stop, run))]
        if with_b:
            background.append(asyncio.create_task(post_b(cluster, b_service, stop, sent)))
            await asyncio.sleep(1.5)  # B is already sending when the flood starts
        a_started = time.time()
        stats = await cluster.post_events(
            range(args.events),
            concurrency=args.concurrency,
            deadline=time.monotonic() + args.timeout,
            prefix="a",
        )
        await wait_for_a(cluster, args.events, args.timeout)
        stop.set()
        await asyncio.gather(*background)
        last_a = await cluster.db.val(
            "SELECT extract(epoch FROM max(finished_at)) FROM executions WHERE organization_id = 1"
        )
        run.drain_seconds = float(last_a) - a_started
        run.accepted = set(stats.accepted) | set(sent)
        await cluster.wait_all_finished(len(run.accepted), within=120)
        if with_b:
            rows = await cluster.db.fetch(
                "SELECT e.event_id, extract(epoch FROM x.finished_at) AS done FROM executions x"
                " JOIN events e ON e.id = x.event_pk WHERE x.organization_id = $1",
                B_ORG,
            )
            done = {r["event_id"]: r["done"] for r in rows if r["done"] is not None}
            run.b_sent = len(sent)
            run.b_latencies = sorted(float(done[k]) - t for k, t in sent.items() if k in done)
            run.b_unfinished = len(sent) - len(run.b_latencies)
        verdict = await verify(cluster, run.accepted, "with B" if with_b else "alone")
        verdict.add("A's events posted", stats.describe())
        verdict.check("workers or API exited on their own", cluster.unexpected_exits() or 0, 0)
        return run, verdict
    finally:
        await cluster.db.close()
        cluster.stop()
        console.print(f"logs: {cluster.workdir.path}")


async def drill(args: argparse.Namespace) -> tuple[Verdict, dict[str, Any]]:
    console.print("run 1: organisation A alone")
    alone, verdict_alone = await one_run(args, with_b=False)
    console.print("run 2: organisation A floods while organisation B sends one event a second")
    mixed, verdict = await one_run(args, with_b=True)
    verdict.extend(verdict_alone)
    b = mixed.b_latencies
    p50 = percentile(b, 0.5) if b else float("nan")
    p99 = percentile(b, 0.99) if b else float("nan")
    share = p99 / mixed.drain_seconds if mixed.drain_seconds else float("nan")
    rate_ratio = mixed.rate / alone.rate if alone.rate else float("nan")
    figures = {
        "events": args.events,
        "workers": args.workers,
        "b_events": mixed.b_sent,
        "b_p50_s": p50,
        "b_p99_s": p99,
        "b_max_s": b[-1] if b else None,
        "a_drain_s": mixed.drain_seconds,
        "a_rate": mixed.rate,
        "a_alone_drain_s": alone.drain_seconds,
        "a_alone_rate": alone.rate,
        "b_p99_over_a_drain": share,
        "a_rate_over_alone": rate_ratio,
        "max_due_backlog": mixed.max_backlog,
        "max_due_backlog_alone": alone.max_backlog,
    }
    verdict.add(
        "A alone: drain time, rate",
        f"{alone.drain_seconds:.1f} s, {alone.rate:,.0f} executions/s",
    )
    verdict.add(
        "A with B: drain time, rate", f"{mixed.drain_seconds:.1f} s, {mixed.rate:,.0f} executions/s"
    )
    verdict.add(
        "largest due backlog: with B / alone", f"{mixed.max_backlog:,} / {alone.max_backlog:,}"
    )
    verdict.add("B's events sent (one a second)", f"{mixed.b_sent}")
    verdict.check("B's events not finished", mixed.b_unfinished, 0)
    verdict.add("B's latency p50 (sent → execution finished)", f"{p50:.3f} s")
    verdict.check("B's latency p99 ≤ 1 s", f"{p99:.3f} s", "≤ 1 s", ok=p99 <= 1.0)
    verdict.check(
        "B's p99 ÷ A's drain time ≤ 2 %", f"{100 * share:.2f} %", "≤ 2 %", ok=share <= 0.02
    )
    verdict.check(
        "A's rate with B ÷ alone ≥ 90 %",
        f"{100 * rate_ratio:.1f} %",
        "≥ 90 %",
        ok=rate_ratio >= 0.9,
    )
    return verdict, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--events", type=int, default=100_000, help="organisation A's flood")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="HTTP connections posting A's flood"
    )
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds a run may take at most"
    )
    args = parser.parse_args()
    header("Fairness: one organisation's flood, another's latency", vars(args))
    verdict, figures = asyncio.run(drill(args))
    verdict.print("Fairness drill")
    if args.json:
        print(json.dumps(figures))
    sys.exit(verdict.exit_code())


if __name__ == "__main__":
    main()
