"""Fault drill 2: SIGSTOP a worker that holds jobs until its lease has run out, then SIGCONT.

    python bench/drills/stall.py [--database-url URL] [--events 400] [--lease 3]
                                 [--stop-seconds 12]

Two workers (A and B) with ``CAREFLOW_JOB_LEASE_SECONDS=3`` and JSON logs at INFO. While
events flow, A is frozen with SIGSTOP at a moment it holds running jobs (read from the jobs
table: ``locked_by`` carries A's pid). During the stop the drill watches A's jobs: B must
rescue them (``attempts`` > 1, ``locked_by`` another worker) or finish them. After SIGCONT
A's late completions must be refused (``jobs.completion_refused`` / ``jobs.failure_refused``
in A's log, for each job it held), and no form, segment membership or execution may be
doubled. Exits 1 when an invariant is broken.

B may rescue a job and still wait, to run it, on row locks that A's open transactions hold
(F7, F8 in docs/reliability.md): a frozen process keeps its transactions open. PostgreSQL
ends them after careflow's ``idle_in_transaction_session_timeout`` (120 s), so a stop
longer than that (``--stop-seconds 140``) shows B finishing every held job during the stop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

from benchkit.drill import Cluster, Db, Verdict, common_args, console, header

REFUSALS = ("jobs.completion_refused", "jobs.failure_refused", "jobs.released")


async def run(args: argparse.Namespace) -> Verdict:
    cluster = Cluster(
        args.database_url,
        pgbouncer=args.pgbouncer,
        extra_env={
            "CAREFLOW_JOB_LEASE_SECONDS": str(args.lease),
            "CAREFLOW_LOG_LEVEL": "INFO",
        },
    )
    verdict = Verdict()
    stopped_pid: int | None = None
    try:
        await cluster.astart(2)
        a, b = "worker0", "worker1"
        pid_a = cluster.workers[a].pid
        started = time.monotonic()
        deadline = started + args.timeout
        posting = asyncio.create_task(
            cluster.post_events(
                range(args.events), concurrency=4, rate=args.rate, deadline=deadline
            )
        )
        held_sql = (
            "SELECT id, kind, attempts, payload::text AS payload FROM jobs"
            " WHERE status = 'running' AND locked_by LIKE $1"
        )
        pattern = f"%:{pid_a}:%"
        wait_until = time.monotonic() + 60
        while time.monotonic() < wait_until:
            if len(await cluster.db.fetch(held_sql, pattern)) >= args.min_held:
                cluster.signal_worker(a, signal.SIGSTOP)
                stopped_pid = pid_a
                break
            await asyncio.sleep(0.02)
        if stopped_pid is None:
            verdict.check(f"worker A held ≥ {args.min_held} jobs within 60 s", "no", "yes")
            return verdict
        stopped_at = time.monotonic()
        # Frozen now: what the table says A holds is exactly what A will try to finish.
        held = await cluster.db.fetch(held_sql, pattern)
        held_ids = {r["id"]: r for r in held}
        watch = {i: Watch(r["attempts"]) for i, r in held_ids.items()}
        resumed = asyncio.Event()
        # The watcher's own connection: an asyncpg connection runs one query at a time, and
        # the main task keeps querying (counts, lock waiters, progress) meanwhile.
        watch_db = Db(cluster.db.dsn)

        async def watcher() -> None:
            # Every 50 ms until every held job is gone (done), or 120 s (or the stop and 30 s,
            # if longer) passed.
            while time.monotonic() - stopped_at < max(120.0, args.stop_seconds + 30):
                in_stop = not resumed.is_set()
                rows = await watch_db.fetch(
                    "SELECT id, attempts, status, locked_by,"
                    " lease_expires_at < clock_timestamp() AS expired"
                    " FROM jobs WHERE id = ANY($1::bigint[])",
                    list(held_ids),
                )
                present = {r["id"]: r for r in rows}
                for i, w in watch.items():
                    w.observe(present.get(i), f":{pid_a}:", in_stop, stopped_at)
                if all(w.gone_at is not None for w in watch.values()):
                    return
                await asyncio.sleep(0.05)

        finished_sql = "SELECT count(*) FROM executions WHERE status <> 'running'"
        finished_at_stop = await cluster.db.val(finished_sql)
        watching = asyncio.create_task(watcher())
        await asyncio.sleep(args.stop_seconds / 2)
        waiters = await cluster.db.fetch(
            "SELECT count(DISTINCT w.pid) AS n, array_agg(DISTINCT left(b.query, 60)) AS q"
            " FROM pg_stat_activity w, unnest(pg_blocking_pids(w.pid)) AS bp"
            " JOIN pg_stat_activity b ON b.pid = bp"
            " WHERE w.datname = current_database()"
        )
        await asyncio.sleep(max(0.0, stopped_at + args.stop_seconds - time.monotonic()))
        finished_in_stop = await cluster.db.val(finished_sql) - finished_at_stop
        cluster.signal_worker(a, signal.SIGCONT)
        resumed.set()
        stopped_pid = None
        resumed_after = time.monotonic() - stopped_at
        stats = await posting
        await cluster.wait_all_finished(
            len(stats.accepted), within=max(1.0, deadline - time.monotonic()), stall=60
        )
        await watching
        await watch_db.close()
        await asyncio.sleep(2)  # let A's last refusals reach its log

        a_log = cluster.log_events(a)
        # jobs.released names its jobs in a list (job_ids): a slot's jobs are given back at once.
        refused_ids = {
            i
            for e in a_log
            if e.get("event") in REFUSALS
            for i in ([e.get("job_id")] if "job_id" in e else e.get("job_ids", []))
        }
        counts = {ev: sum(1 for e in a_log if e.get("event") == ev) for ev in REFUSALS}
        lease_lost = sum(1 for e in a_log if e.get("event") == "jobs.lease_lost")
        rescued = {
            n: sum(
                e.get("count", 0)
                for e in cluster.log_events(n)
                if e.get("event") == "jobs.leases_rescued"
            )
            for n in (a, b)
        }
        n_held = len(held)
        verdict.add("events posted", stats.describe())
        verdict.add("lease / A stopped for", f"{args.lease:g} s / {resumed_after:.1f} s")
        kinds = sorted({r["kind"] for r in held})
        verdict.add(
            "jobs A held when stopped (kind: n)",
            ", ".join(f"{k}: {sum(1 for r in held if r['kind'] == k)}" for k in kinds),
        )
        # A job deleted while A was frozen whose late outcome A then saw refused (or that A
        # gave back unrun) was rescued and run by another worker, even if both happened
        # between two samples (a rescue and a rerun can take less than the 50 ms between them).
        unseen = {
            i
            for i, w in watch.items()
            if w.done_in_stop and i in refused_ids and not w.left_a_in_stop
        }
        left = sum(w.left_a_in_stop or i in unseen for i, w in watch.items())
        verdict.check(
            "A's jobs rescued (taken from A) while A was stopped",
            f"{left} of {n_held}",
            "",
            ok=left == n_held,
        )
        verdict.add(
            "  of which between two samples (gone during the stop, A refused later)",
            str(len(unseen)),
        )
        done = sum(w.done_in_stop for w in watch.values())
        verdict.check(
            "A's jobs run to completion by another worker while A was stopped",
            f"{done} of {n_held}",
            "",
            ok=done == n_held,
        )
        verdict.add("executions finished (by anyone) while A was stopped", f"{finished_in_stop:,}")
        w0 = waiters[0] if waiters else None
        verdict.add("backends waiting on a lock, mid-stop", str(w0["n"] if w0 else 0))
        for q in (w0["q"] or []) if w0 else []:
            verdict.add("  blocker's last statement", " ".join(str(q).split()))
        action_rows = await cluster.db.fetch(
            "SELECT execution_id, action_index, attempts FROM execution_actions"
        )
        attempts = {(r[0], r[1]): r[2] for r in action_rows}
        action_of: dict[int, tuple[int, int]] = {}
        for r in held:
            payload = json.loads(r["payload"])
            if "execution_id" in payload:
                action_of[r["id"]] = (int(payload["execution_id"]), int(payload["action_index"]))
        # A run_action job also shows a later run in its action row (attempts > 1), which
        # the 50 ms sampling of the jobs table can miss.
        # A job seen taken from A and then gone while A was still stopped was run by another
        # worker, even when its claim (attempts + 1) and its run both fell between two samples
        # (a batch of dispatches can take less than the 50 ms between them).
        rerun = sum(
            w.max_attempts > held_ids[i]["attempts"]
            or i in unseen
            or (w.left_a_in_stop and w.done_in_stop)
            or (i in action_of and (attempts.get(action_of[i]) or 0) > 1)
            for i, w in watch.items()
        )
        verdict.check(
            "A's held jobs that ran again (jobs.attempts > 1)",
            f"{rerun} of {n_held}",
            "",
            ok=rerun == n_held,
        )
        verdict.add(
            "per held job: highest attempts, last holder",
            ", ".join(f"#{i}: {w.max_attempts} {w.last_holder}" for i, w in sorted(watch.items())),
        )
        stale = sum(w.stale_claims > 0 for w in watch.values())
        verdict.add("held jobs A claimed again after SIGCONT with an expired lease", str(stale))
        verdict.add("jobs.leases_rescued in the logs of A / B", f"{rescued[a]} / {rescued[b]}")
        verdict.add("A's log: jobs.lease_lost (heartbeats refused)", str(lease_lost))
        for ev in REFUSALS:
            verdict.add(f"A's log: {ev}", str(counts[ev]))
        # A completion refused, or a failure refused: past PostgreSQL's idle-in-transaction
        # timeout A's batch transaction is gone when it wakes, so it never reaches the fenced
        # DELETE and what it tries to record is the failure, which the fence refuses too.
        late = counts["jobs.completion_refused"] + counts["jobs.failure_refused"]
        verdict.check(
            "A's log shows a late outcome refused (completion or failure)",
            late,
            "≥ 1",
            ok=late >= 1,
        )
        not_refused = sorted(set(held_ids) - refused_ids)
        verdict.check("held jobs whose late outcome A did not log as refused", len(not_refused), 0)
        verdict.check("workers or API exited on their own", cluster.unexpected_exits() or 0, 0)
        verdict.extend(await cluster.verify(stats.accepted))
        held_actions = list(action_of.values())
        recorded = [attempts.get(k) or 0 for k in held_actions]
        verdict.check(
            "held run_action jobs whose action row records attempts > 1",
            f"{sum(1 for x in recorded if x > 1)} of {len(held_actions)}",
            "",
            ok=all(x > 1 for x in recorded),
        )
        return verdict
    finally:
        if stopped_pid is not None:
            cluster.signal_worker("worker0", signal.SIGCONT)
        await cluster.db.close()
        cluster.stop()
        console.print(f"logs: {cluster.workdir.path}")


@dataclass
class Watch:
    """What the drill saw of one job A held when it was stopped."""

    max_attempts: int
    left_a_in_stop: bool = False  # rescued: no longer locked by A while A was stopped
    done_in_stop: bool = False  # deleted (completed) while A was stopped
    gone_at: float | None = None
    last_holder: str = "A"
    stale_claims: int = 0

    def observe(self, row: Any, a_tag: str, in_stop: bool, stopped_at: float) -> None:
        if row is None:
            if self.gone_at is None:
                self.gone_at = time.monotonic() - stopped_at
                self.done_in_stop = in_stop
            return
        self.max_attempts = max(self.max_attempts, row["attempts"])
        holder = row["locked_by"] or ""
        mine = a_tag in holder
        if in_stop and not mine:
            self.left_a_in_stop = True
        if holder:
            self.last_holder = "A" if mine else "B"
        if not in_stop and mine and row["status"] == "running" and row["expired"]:
            self.stale_claims += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--rate", type=float, default=15.0, help="events per second")
    parser.add_argument("--lease", type=float, default=3.0, help="CAREFLOW_JOB_LEASE_SECONDS")
    parser.add_argument("--stop-seconds", type=float, default=12.0)
    parser.add_argument("--min-held", type=int, default=3, help="jobs A must hold when stopped")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    header("Drill 2: SIGSTOP a worker past its lease, then SIGCONT", vars(args))
    verdict = asyncio.run(run(args))
    verdict.print(f"Drill 2: stalled worker, lease {args.lease:g} s")
    if args.json:
        print(json.dumps({"drill": "stall", "failures": verdict.failures, "rows": verdict.rows}))
    sys.exit(verdict.exit_code())


if __name__ == "__main__":
    main()
