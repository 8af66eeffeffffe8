"""Fault drill 5: restart PostgreSQL mid-run, only when nobody else is using it.

    python bench/drills/pg_restart.py [--database-url URL] [--rate 3] [--baseline 30]
                                      [--after 60] [--quiet-wait 600] [--cluster main]

Same load and probes as drill 4. At the fault the drill first waits (up to
``--quiet-wait`` s, polling every 2 s) until no other database has a client:

    psql -h 127.0.0.1 -U postgres -Atc "select count(*) from pg_stat_activity
      where datname not in ('careflow_drills') and datname is not null
      and pid <> pg_backend_pid()"

returns 0, then runs ``pg_ctlcluster --skip-systemctl-redirect <version> <cluster> restart``
(``--cluster``: the Debian cluster serving ``--database-url``'s port; a cluster of the
drill's own, e.g. ``pg_createcluster 15 drills -p 5433``, has no other clients to wait for).
If no quiet moment comes, the restart is skipped (exit code 3). Then: workers reconnect on
their own, none exits, every accepted event ends ``success``, probe latency is back to
normal within 30 s. PostgreSQL is started again if it is not up when the drill ends.
Exits 1 when an invariant is broken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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

SKIPPED = 3


def others_connected(own_db: str, port: int) -> int | None:
    sql = (
        "select count(*) from pg_stat_activity where datname not in"
        f" ('{own_db}') and datname is not null and pid <> pg_backend_pid()"
    )
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-Atc", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    try:
        return int(out.stdout.strip())
    except ValueError:
        return None


def cluster_version() -> str:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    return versions[-1]


def pg_ready(port: int) -> bool:
    cmd = ["pg_isready", "-h", "127.0.0.1", "-p", str(port)]
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


def ensure_running(cluster: str, port: int) -> None:
    deadline = time.monotonic() + 60
    while not pg_ready(port) and time.monotonic() < deadline:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", cluster_version(), cluster, "start"],
            timeout=120,
            check=False,
        )
        time.sleep(2)


async def run(args: argparse.Namespace) -> tuple[Verdict, bool]:
    own_db = args.database_url.rsplit("/", 1)[1].split("?", 1)[0]
    port = urlsplit(args.database_url).port or 5432
    cluster = Cluster(args.database_url, pgbouncer=args.pgbouncer)
    verdict = Verdict()

    async def fault() -> dict[str, Any]:
        waited_from = time.monotonic()
        while time.monotonic() - waited_from < args.quiet_wait:
            others = await asyncio.to_thread(others_connected, own_db, port)
            if others == 0:
                break
            await asyncio.sleep(2)
        else:
            return {"skipped": True, "waited": time.monotonic() - waited_from}
        began = time.monotonic()
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", cluster_version(), args.cluster]
        cmd.append("restart")
        out = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=180, check=False
        )
        return {
            "struck_at": began,
            "waited": began - waited_from,
            "restart_seconds": time.monotonic() - began,
            "rc": out.returncode,
            "stderr": out.stderr.strip()[-300:],
        }

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
        info = run_.fault_info
        skipped = bool(info.get("skipped"))
        await cluster.wait_all_finished(len(run_.stats.accepted) + len(run_.probes), within=300)
        verdict.add("events posted (background)", run_.stats.describe())
        if skipped:
            verdict.add("restart", f"SKIPPED: others connected for {info['waited']:.0f} s")
        else:
            verdict.add("waited for a quiet moment", f"{info['waited']:.0f} s")
            verdict.add("pg_ctlcluster restart took", f"{info['restart_seconds']:.1f} s")
            verdict.check("pg_ctlcluster exit code", info["rc"], 0)
            await asyncio.sleep(1)
            listener_rows(cluster, verdict)
        judge_latency(run_, verdict)
        verdict.check("workers or API exited on their own", cluster.unexpected_exits() or 0, 0)
        accepted = run_.stats.accepted | {f"probe-{i}" for i in range(len(run_.probes))}
        verdict.extend(await cluster.verify(accepted))
        return verdict, skipped
    finally:
        await cluster.db.close()
        cluster.stop()
        await asyncio.to_thread(ensure_running, args.cluster, port)
        up = "up" if pg_ready(port) else "DOWN"
        console.print(f"pg_isready: {up}; logs: {cluster.workdir.path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_args(parser)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=3.0, help="background events per second")
    parser.add_argument("--baseline", type=float, default=30.0)
    parser.add_argument("--after", type=float, default=60.0)
    parser.add_argument("--probe-every", type=float, default=2.0)
    parser.add_argument("--quiet-wait", type=float, default=600.0)
    parser.add_argument("--cluster", default="main", help="the Debian cluster to restart")
    args = parser.parse_args()
    header("Drill 5: restart PostgreSQL mid-run", vars(args))
    verdict, skipped = asyncio.run(run(args))
    verdict.print("Drill 5: PostgreSQL restarted" + (" (SKIPPED)" if skipped else ""))
    if args.json:
        print(
            json.dumps({"drill": "pg_restart", "failures": verdict.failures, "rows": verdict.rows})
        )
    sys.exit(verdict.exit_code() or (SKIPPED if skipped else 0))


if __name__ == "__main__":
    main()
