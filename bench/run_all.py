"""Run every benchmark in turn with small defaults and print one summary table.

    python bench/run_all.py [--database-url postgresql+asyncpg://…/careflow_bench]
    python bench/run_all.py --compare --database-url … [--quick] [--json]

Without ``--database-url`` the SQLite ones run and ``perf/fires.py`` (PostgreSQL only) is
skipped. Each script's own table is printed as it finishes; the summary comes last. Each
script is given a hard limit of 5 minutes. ``--compare`` runs ``bench/compare.py`` instead
(careflow beside its peers, one table of ratios; PostgreSQL only), passing on ``--quick``
and ``--json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from benchkit.common import BENCH_DIR


def run(script: str, *args: str) -> Any:
    cmd = [sys.executable, str(BENCH_DIR / script), *args, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    lines = out.stdout.strip().splitlines()
    print("\n".join(line for line in lines if not line.startswith(("{", "["))))
    if out.returncode != 0 or not lines or not lines[-1].startswith(("{", "[")):
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--compare", action="store_true", help="run bench/compare.py instead")
    parser.add_argument("--quick", action="store_true", help="with --compare: small sizes")
    parser.add_argument("--json", action="store_true", help="with --compare: also print JSON")
    args = parser.parse_args()
    if args.compare:
        if not args.database_url:
            raise SystemExit("--compare needs --database-url (a PostgreSQL bench database)")
        flags = [f for f, on in (("--quick", args.quick), ("--json", args.json)) if on]
        cmd = [sys.executable, str(BENCH_DIR / "compare.py"), "--database-url", args.database_url]
        sys.exit(subprocess.run([*cmd, *flags], check=False, timeout=3600).returncode)
    db = ["--database-url", args.database_url] if args.database_url else []

    rows: list[tuple[str, str, str]] = []
    subprocess.run(
        [sys.executable, str(BENCH_DIR / "perf/conditions.py"), "--rules", "200"],
        check=False,
        timeout=300,
    )

    q = run("perf/queue.py", *db, "--jobs", "5000")
    if q:
        rows.append(
            (
                "queue: noop jobs/s",
                f"{q['jobs_per_s']:,.0f}",
                f"{q['ratio']:.3f} of 1-row-INSERT tps",
            )
        )
    i = run("perf/ingest.py", *db, "--seconds", "8")
    if i:
        c, b = i["careflow"], i["bare"]
        rows.append(
            (
                "ingest: POST /v1/events req/s",
                f"{c['req_per_s']:,.0f} (p99 {c['p99_ms']:,.0f} ms)",
                f"{c['req_per_s'] / b['req_per_s']:.2f} of bare FastAPI+INSERT",
            )
        )
    e = run("perf/e2e.py", *db, "--events", "500")
    if e:
        rows.append(
            (
                "e2e: executions/s",
                f"{e['executions_per_s']:,.1f}",
                f"{e['emails']} emails, {e['duplicate_message_ids']} duplicate Message-IDs",
            )
        )
    if args.database_url:
        f = run("perf/fires.py", *db, "--pending", "1000,200000", "--burst", "1000")
        if f:
            for r in f:
                rows.append(
                    (
                        f"fires: P={r['pending']:,}",
                        f"claim {r['explain_ms']:.2f} ms",
                        f"lag p50 {r['lag_p50_s']:.2f} s, p99 {r['lag_p99_s']:.2f} s",
                    )
                )

    table = Table(title="careflow benchmarks: summary (small defaults, shared 2-core machine)")
    table.add_column("benchmark")
    table.add_column("figure", justify="right")
    table.add_column("reference / check")
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
