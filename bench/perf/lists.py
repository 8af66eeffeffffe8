"""The first page of each list at scale (PostgreSQL): server time with 5 million executions.

    python bench/perf/lists.py --database-url postgresql+asyncpg://…/careflow_lists
                               [--executions 5000000] [--others 1000000] [--runs 7] [--reuse]

1. Seeding (skipped with ``--reuse`` when organisation 1 already holds ``--executions``
   executions; the schema is then migrated to the head, building what is new): the ``public`` schema is dropped and migrated again, then organisation 1 gets
   20 rules, ``--executions`` executions over the last 365 days with two action rows each,
   and ``--others`` messages, episodes and audit entries each; organisation 2 gets a
   thousandth of each. Every row is written by ``INSERT … SELECT … generate_series`` in
   chunks of 500,000. The mix: statuses 85 % success, 7 % skipped, 4 % failure, 3 %
   partial_failure, 1 % running; four trigger events; messages 70 % email; episodes half
   open. Then ``VACUUM (ANALYZE)``, which autovacuum does on a live database (it is off on
   some machines, so the script does not wait for it), and the kept counts' deltas (written
   by the lists' triggers, ``careflow.kit.listcounts``) are folded in, as the workers'
   housekeeping does every 10 s.
2. Timing: careflow's app in this process (``httpx.ASGITransport``), an admin token of
   organisation 1. Each case (a list with no filter, then with each filter it offers, one at
   a time) is requested once to warm up and then ``--runs`` times. Server time is measured
   inside the app's ASGI call, from the request's arrival to the last byte of the response.
   Each response's ``meta.total`` is checked against ``count(*)`` in SQL.
3. A table of p50 / p95 ms per case, and whether each is within ``--budget`` (200 ms).

``CASES`` is the list of paths timed; a page that calls the same services (the console's
lists) is timed by adding its path there, or with ``--path`` (repeatable) at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/, see benchkit/__init__.py

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from benchkit.common import (
    JWT_SECRET,
    careflow_cmd,
    careflow_env,
    is_postgres,
    loadavg,
    percentile,
    plain_pg_dsn,
    reset_database,
)

CHUNK = 500_000
RULES = 20
EVENTS = ["patient.onboarded", "appointment.booked", "appointment.cancelled", "form.submitted"]
JOURNEYS = ["onboarding", "follow_up", "referral", "billing", "prescription"]
ASSIGNMENTS = ["front_desk", "nurse", "doctor", "billing_team"]
PRIORITIES = ["low", "medium", "high", "urgent"]
OBJECT_TYPES = ["automation_rule", "episode", "pathway_rule", "execution", "template"]
ACTORS = ["admin-1", "admin-2", "specialist-1", "careflow"]
PATIENTS = 200_000

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]"


# Each takes $1 = organisation, $2..$3 = the chunk's first and last g, $4 = the org's n rows
# (for spacing the times), $5 = the newest time. g = 1 is the oldest row, g = n the newest.
AT = (
    "$5::timestamptz - (($4::bigint - g) * (365 * 86400.0 / $4::bigint))::float8"
    " * interval '1 second'"
)

SEED_RULES = f"""
INSERT INTO automation_rules (organization_id, name, enabled, trigger_event, trigger_config,
    conditions, actions, version, created_at, updated_at)
SELECT $1, 'Seeded rule ' || r, true, ({_array(EVENTS)})[1 + r % 4], '{{}}', '{{}}',
    '[{{"type": "send_email"}}, {{"type": "create_task"}}]', 1, $2, $2
FROM generate_series(0, {RULES - 1}) r ORDER BY r
"""

SEED_EXECUTIONS = f"""
INSERT INTO executions (organization_id, automation_rule_id, automation_rule_name, rule_version,
    trigger_event, trigger_entity_type, trigger_entity_id, patient_id, occurrence_key, status,
    actions, context, error_message, executed_at, finished_at)
SELECT $1, $6::bigint + g % {RULES}, 'Seeded rule ' || g % {RULES}, 1,
    ({_array(EVENTS)})[1 + (g % {RULES}) % 4], 'patient', (g % {PATIENTS})::text,
    (g % {PATIENTS})::text, 'seed:' || g, s.status,
    '[{{"type": "send_email"}}, {{"type": "create_task"}}]', '{{}}',
    CASE WHEN s.status IN ('failure', 'partial_failure') THEN 'seeded failure' END,
    {AT}, CASE WHEN s.status <> 'running' THEN {AT} + interval '2 seconds' END
FROM generate_series($2::bigint, $3::bigint) g,
    LATERAL (SELECT CASE
        WHEN (g * 7919) % 100 < 85 THEN 'success'
        WHEN (g * 7919) % 100 < 92 THEN 'skipped'
        WHEN (g * 7919) % 100 < 96 THEN 'failure'
        WHEN (g * 7919) % 100 < 99 THEN 'partial_failure'
        ELSE 'running' END AS status) s
ORDER BY g
"""

SEED_ACTIONS = """
INSERT INTO execution_actions (execution_id, action_index, type, status, result, error,
    attempts, duration_ms, finished_at)
SELECT e.id, i, CASE i WHEN 0 THEN 'send_email' ELSE 'create_task' END,
    CASE WHEN e.status = 'failure' OR (e.status = 'partial_failure' AND i = 1) THEN 'failure'
         WHEN e.status = 'skipped' THEN 'skipped' ELSE 'success' END,
    '{}', NULL, 1, 40, e.finished_at
FROM executions e CROSS JOIN generate_series(0, 1) i
WHERE e.organization_id = $1 AND e.id BETWEEN $2 AND $3 AND e.status <> 'running'
"""

SEED_MESSAGES = f"""
INSERT INTO messages (id, organization_id, channel, patient_id, recipient, template, subject,
    body, status, provider, attempts, execution_id, action_index, created_at, sent_at)
SELECT CASE WHEN g % 10 < 7 THEN 'msg_' ELSE 'sms_' END || lpad(to_hex($1 * 100000000 + g), 24, '0'),
    $1, CASE WHEN g % 10 < 7 THEN 'email' ELSE 'sms' END, (g % {PATIENTS})::text,
    'p' || g || '@example.test', 'welcome', 'Welcome', 'Hello',
    (ARRAY['delivered', 'sent', 'sent', 'delivered', 'failed', 'queued', 'delivered',
           'undelivered', 'delivered', 'retrying'])[1 + (g * 31) % 10],
    CASE WHEN g % 10 < 7 THEN 'smtp' ELSE 'twilio' END, 1,
    $6::bigint + 1 + (g - 1) * $7::bigint, 0, {AT}, {AT}
FROM generate_series($2::bigint, $3::bigint) g ORDER BY g
"""

SEED_EPISODES = f"""
INSERT INTO episodes (organization_id, patient_id, journey_type, status, inbox_visibility,
    suggested_assignment, suggested_priority, expected_next_actor, assignee, priority,
    created_at, updated_at)
SELECT $1, (g % {PATIENTS})::text, ({_array(JOURNEYS)})[1 + g % 5],
    CASE WHEN (g * 13) % 2 = 0 THEN 'open' ELSE 'closed' END,
    CASE WHEN g % 10 < 8 THEN 'visible' ELSE 'hidden' END,
    ({_array(ASSIGNMENTS)})[1 + (g * 7) % 4], ({_array(PRIORITIES)})[1 + (g * 3) % 4],
    'practice', NULL, ({_array(PRIORITIES)})[1 + (g * 3) % 4], {AT}, {AT}
FROM generate_series($2::bigint, $3::bigint) g ORDER BY g
"""

SEED_AUDIT = f"""
INSERT INTO audit_log (organization_id, actor_sub, actor_role, action, object_type, object_id,
    before, after, request_id, created_at)
SELECT $1, ({_array(ACTORS)})[1 + g % 4], 'admin', 'update', ({_array(OBJECT_TYPES)})[1 + (g * 7) % 5],
    (g % 50000)::text, '{{"enabled": true}}', '{{"enabled": false}}', NULL, {AT}
FROM generate_series($2::bigint, $3::bigint) g ORDER BY g
"""


async def _chunked(
    conn: asyncpg.Connection, label: str, sql: str, org: int, n: int, newest: datetime, *extra: Any
) -> None:
    started = time.monotonic()
    for first in range(1, n + 1, CHUNK):
        last = min(n, first + CHUNK - 1)
        await conn.execute(sql, org, first, last, n, newest, *extra)
    print(f"  org {org}: {n:,} {label} in {time.monotonic() - started:.0f} s", flush=True)


async def seed(dsn: str, executions: int, others: int) -> None:
    newest = datetime.now(UTC).replace(microsecond=0)
    conn = await asyncpg.connect(dsn)
    try:
        for org, scale in ((1, 1), (2, 1000)):
            n_exec, n_other = max(1, executions // scale), max(1, others // scale)
            await conn.execute(SEED_RULES, org, newest)
            first_rule = await conn.fetchval(
                "SELECT min(id) FROM automation_rules WHERE organization_id = $1", org
            )
            before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM executions")
            await _chunked(conn, "executions", SEED_EXECUTIONS, org, n_exec, newest, first_rule)
            low, high = await conn.fetchrow(
                "SELECT min(id), max(id) FROM executions WHERE organization_id = $1", org
            )
            started = time.monotonic()
            for first in range(low, high + 1, CHUNK):
                await conn.execute(SEED_ACTIONS, org, first, min(high, first + CHUNK - 1))
            print(f"  org {org}: action rows in {time.monotonic() - started:.0f} s", flush=True)
            # Messages point at executions evenly spread (their first action sent them).
            step = max(1, n_exec // n_other)
            await _chunked(conn, "messages", SEED_MESSAGES, org, n_other, newest, before, step)
            await _chunked(conn, "episodes", SEED_EPISODES, org, n_other, newest)
            await _chunked(conn, "audit entries", SEED_AUDIT, org, n_other, newest)
        started = time.monotonic()
        await conn.execute("VACUUM (ANALYZE)")
        print(f"  VACUUM (ANALYZE) in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        await conn.close()


async def compact(url: str) -> None:
    """The kept counts' deltas, folded in as the workers' housekeeping does every 10 s."""
    from careflow.db import create_engine, create_sessionmaker
    from careflow.kit import listcounts

    engine = create_engine(url)
    async with create_sessionmaker(engine)() as session, session.begin():
        await listcounts.compact(session)
    await engine.dispose()


async def seeded_executions(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('public.executions') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT count(*) FROM executions WHERE organization_id = 1"))
    finally:
        await conn.close()


async def case_values(dsn: str) -> dict[str, Any]:
    """Filter values that exist in the seeded rows (the newest time anchors the dates)."""
    conn = await asyncpg.connect(dsn)
    try:
        newest = await conn.fetchval(
            "SELECT max(executed_at) FROM executions WHERE organization_id = 1"
        )
        return {
            "rule": await conn.fetchval(
                "SELECT min(id) FROM automation_rules WHERE organization_id = 1"
            ),
            "execution": await conn.fetchval(
                "SELECT execution_id FROM messages WHERE organization_id = 1 "
                "ORDER BY created_at DESC LIMIT 1"
            ),
            "month_ago": (newest - timedelta(days=30)).date().isoformat(),
            "newest": newest,
        }
    finally:
        await conn.close()


def cases(v: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(list, filter label, path): every list with no filter, then each filter alone."""
    month = v["month_ago"]
    at = (v["newest"] - timedelta(days=30)).isoformat().replace("+00:00", "Z")
    ex = "/v1/automations/executions"
    return [
        ("executions", "none", ex),
        ("executions", "automation_rule_id", f"{ex}?automation_rule_id={v['rule']}"),
        ("executions", "status=success", f"{ex}?status=success"),
        ("executions", "status=failure", f"{ex}?status=failure"),
        ("executions", "trigger_event", f"{ex}?trigger_event=patient.onboarded"),
        ("executions", "from_date (30 days)", f"{ex}?from_date={month}"),
        ("executions", "to_date (all but 30 days)", f"{ex}?to_date={month}"),
        ("messages", "none", "/v1/messages"),
        ("messages", "channel=email", "/v1/messages?channel=email"),
        ("messages", "status=delivered", "/v1/messages?status=delivered"),
        ("messages", "execution_id", f"/v1/messages?execution_id={v['execution']}"),
        ("messages", "patient_id", "/v1/messages?patient_id=4242"),
        ("episodes", "none", "/v1/episodes"),
        ("episodes", "patient_id", "/v1/episodes?patient_id=4242"),
        ("episodes", "journey_type", "/v1/episodes?journey_type=referral"),
        ("episodes", "status=open", "/v1/episodes?status=open"),
        ("episodes", "inbox_visibility", "/v1/episodes?inbox_visibility=visible"),
        ("episodes", "suggested_assignment", "/v1/episodes?suggested_assignment=nurse"),
        ("episodes", "suggested_priority", "/v1/episodes?suggested_priority=high"),
        ("audit log", "none", "/v1/audit-log"),
        ("audit log", "object_type", "/v1/audit-log?object_type=episode"),
        ("audit log", "object_id", "/v1/audit-log?object_id=4242"),
        ("audit log", "actor", "/v1/audit-log?actor=admin-2"),
        ("audit log", "from (30 days)", f"/v1/audit-log?from={at}"),
        ("audit log", "to (all but 30 days)", f"/v1/audit-log?to={at}"),
        # The console's lists: the same services, rendered as HTML (a signed-in session).
        ("console executions", "none", "/console/executions"),
        ("console executions", "status=failure", "/console/executions?status=failure"),
        ("console executions", "rule", f"/console/executions?automation_rule_id={v['rule']}"),
        ("console executions", "patient_id", "/console/executions?patient_id=4242"),
        ("console inbox", "none (open)", "/console/inbox"),
        ("console inbox", "patient_id", "/console/inbox?patient_id=4242"),
        ("console audit", "none", "/console/audit"),
        ("console audit", "object_type", "/console/audit?object_type=episode"),
    ]


async def sign_in_to_console(client: httpx.AsyncClient, token: str) -> None:
    """The console's session for ``client`` (its cookie jar), as a browser signs in."""
    import re

    form = await client.get("/console/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert found is not None, "no sign-in form"
    answer = await client.post("/console/login", data={"token": token, "csrf_token": found[1]})
    assert answer.status_code == 303, answer.text


class ServerTimer:
    """ASGI wrapper: the time from a request's arrival to its response's last byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.last_ms = 0.0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        started = time.perf_counter()

        async def timed_send(message: Scope) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.last_ms = (time.perf_counter() - started) * 1000

        await self.app(scope, receive, timed_send)


async def time_cases(url: str, runs: int, extra_paths: list[str]) -> list[dict[str, Any]]:
    from careflow.app import create_app
    from careflow.auth import issue_token
    from careflow.config import Settings
    from careflow.db import create_engine
    from careflow.kit.clock import SystemClock

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="development",
        database_url=url,
        jwt_secret=JWT_SECRET,
        log_level="WARNING",
    )
    engine = create_engine(url)
    timer = ServerTimer(create_app(settings, engine=engine, clock=SystemClock()))
    token = issue_token(settings, org_id=1, role="admin", sub="bench")
    headers = {"Authorization": f"Bearer {token}"}
    dsn = plain_pg_dsn(url)
    all_cases = cases(await case_values(dsn)) + [("extra", p, p) for p in extra_paths]
    results = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=timer), base_url="http://bench", timeout=120
    ) as client:
        await sign_in_to_console(client, token)
        for name, label, path in all_cases:
            first = await client.get(path, headers=headers)
            first.raise_for_status()
            times = []
            for _ in range(runs):
                response = await client.get(path, headers=headers)
                response.raise_for_status()
                times.append(timer.last_ms)
            times.sort()
            body = response.json() if "json" in response.headers.get("content-type", "") else {}
            results.append(
                {
                    "list": name,
                    "filter": label,
                    "path": path,
                    "rows": len(body.get("data", [])),
                    "total": body.get("meta", {}).get("total"),
                    "p50_ms": round(statistics.median(times), 1),
                    "p95_ms": round(percentile(times, 0.95), 1),
                }
            )
            print(f"  {name:10} {label:28} {results[-1]['p50_ms']:8.1f} ms", flush=True)
    await engine.dispose()
    return results


async def check_totals(dsn: str, results: list[dict[str, Any]]) -> list[str]:
    """Each unfiltered list's meta.total against count(*) in SQL."""
    tables = {
        "executions": "executions",
        "messages": "messages",
        "episodes": "episodes",
        "audit log": "audit_log",
    }
    wrong = []
    conn = await asyncpg.connect(dsn)
    try:
        for r in results:
            if r["filter"] == "none" and r["list"] in tables:
                sql = f"SELECT count(*) FROM {tables[r['list']]} WHERE organization_id = 1"
                exact = await conn.fetchval(sql)
                if exact != r["total"]:
                    wrong.append(f"{r['list']}: meta.total {r['total']} != count(*) {exact}")
    finally:
        await conn.close()
    return wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="postgresql+asyncpg://…")
    parser.add_argument("--executions", type=int, default=5_000_000)
    parser.add_argument(
        "--others", type=int, default=1_000_000, help="messages, episodes and audit entries (each)"
    )
    parser.add_argument("--runs", type=int, default=7, help="timed requests per case")
    parser.add_argument("--budget", type=float, default=200.0, help="ms of server time, p95")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the rows when organisation 1 has --executions already",
    )
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        help="another path to time (e.g. a console list); repeatable",
    )
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args()
    if args.others > args.executions:
        raise SystemExit("--others must not exceed --executions (a message per execution)")
    if not is_postgres(args.database_url):
        raise SystemExit("this script needs a PostgreSQL --database-url")
    dsn = plain_pg_dsn(args.database_url)

    if args.reuse and asyncio.run(seeded_executions(dsn)) == args.executions:
        print("reusing the seeded rows; migrating to the head …", flush=True)
        subprocess.run(careflow_cmd("migrate"), env=careflow_env(args.database_url), check=True)
    else:
        print("seeding …", flush=True)
        reset_database(args.database_url)
        asyncio.run(seed(dsn, args.executions, args.others))
        asyncio.run(compact(args.database_url))
    print(f"timing ({args.runs} runs a case, load {loadavg()}) …", flush=True)
    results = asyncio.run(time_cases(args.database_url, args.runs, args.path))
    wrong = asyncio.run(check_totals(dsn, results))

    table = Table(title=f"First page (limit 20), server ms, {args.executions:,} executions")
    for column in ("list", "filter", "meta.total", "p50", "p95", f"≤ {args.budget:.0f}"):
        table.add_column(column, justify="left" if column in ("list", "filter") else "right")
    for r in results:
        ok = "yes" if r["p95_ms"] <= args.budget else "NO"
        table.add_row(
            r["list"],
            r["filter"],
            f"{r['total']:,}" if r["total"] is not None else "",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            ok,
        )
    Console().print(table)
    print(f"load after: {loadavg()}")
    for line in wrong:
        print("WRONG TOTAL", line)
    if args.json:
        print(json.dumps(results))
    if wrong:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
