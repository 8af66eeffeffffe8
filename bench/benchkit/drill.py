"""What the fault drills (``bench/drills/*.py``) share: a careflow cluster on PostgreSQL, an SMTP
sink that records Message-IDs, event posting, latency probes and the invariant checks.

A drill starts ``careflow serve --no-worker`` plus N ``careflow worker`` processes against its
own database (``careflow_drills`` by default; the ``public`` schema is dropped and
re-created), creates one rule on ``patient.onboarded`` (``require_form`` → ``update_segment``
→ ``send_email``, unless the drill gives its own), injects its fault, and then checks the invariants straight in the
database and at the sink. Every loop has a count or a deadline; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiosmtpd.controller import Controller
from rich.console import Console
from rich.table import Table

from benchkit.common import (
    Children,
    Workdir,
    careflow_cmd,
    careflow_env,
    free_port,
    loadavg,
    mint_token,
    percentile,
    plain_pg_dsn,
    reset_database,
    wait_http,
)
from benchkit.pgbouncer import PgBouncer

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/careflow_drills"
FORM_TEMPLATE_ID = 10
SEGMENT_ID = 7
EMAIL_ACTION_INDEX = 2

RULE = {
    "name": "Onboarding: consent, segment, welcome",
    "description": "fault drill rule",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [
        {
            "type": "require_form",
            "form_template_id": FORM_TEMPLATE_ID,
            "blocking": True,
            "description": "Registration consent",
        },
        {"type": "update_segment", "segment_id": SEGMENT_ID, "action": "add"},
        {"type": "send_email", "template": "welcome_patient"},
    ],
}

console = Console(width=130)


# The domain of the Message-IDs: the drills leave CAREFLOW_EMAIL_FROM at its default.
EMAIL_DOMAIN = "careflow.local"


def message_id_for(
    installation_id: str, execution_id: int, action_index: int = EMAIL_ACTION_INDEX
) -> str:
    """The Message-ID careflow gives an action's email (``careflow.delivery.email``), in
    the deployment whose ``installation`` row names ``installation_id``."""
    return f"<exec-{execution_id}.action-{action_index}.{installation_id}@{EMAIL_DOMAIN}>"


# -- SMTP sink ------------------------------------------------------------------------------


class Sink:
    """aiosmtpd handler on a fixed port that can be stopped and started again."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.message_ids: Counter[str] = Counter()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content)
        with self.lock:
            self.message_ids[str(message.get("Message-ID", ""))] += 1
        return "250 OK"

    @property
    def running(self) -> bool:
        return self.controller is not None

    def start(self) -> None:
        if self.controller is None:
            self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
            self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.message_ids)


# -- database access that survives a restart ------------------------------------------------


class Db:
    """One asyncpg connection for the drill's own checks, reopened when it breaks.

    Concurrent probes take turns on it: asyncpg allows one operation at a time on a
    connection, and two at once can fail with an error that is none of those caught here.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None
        self.lock = asyncio.Lock()

    async def _connection(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(self.dsn, timeout=5)
        return self.conn

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.lock:
            try:
                conn = await self._connection()
                return await conn.fetch(sql, *args, timeout=30)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                await self.close()
                raise

    async def val(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    async def try_val(self, sql: str, *args: Any) -> Any:
        """``val`` that answers None while the database is unreachable."""
        try:
            return await self.val(sql, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return None

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.terminate()
            self.conn = None


# -- the cluster ----------------------------------------------------------------------------


@dataclass
class Cluster:
    """``careflow serve --no-worker`` + workers + an SMTP sink, on the drill's database."""

    database_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    workdir: Workdir = field(default_factory=Workdir)
    sink: Sink = field(default_factory=Sink)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    exited: dict[str, int | None] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    concurrency: int | None = None
    # "off"; "listen": through a PgBouncer in transaction mode, the workers' LISTEN on the
    # direct server; "polling": through PgBouncer, no listen URL (workers poll alone).
    pgbouncer: str = "off"
    # The automation rule the cluster is started with (the drills' own, unless given).
    rule: dict[str, Any] = field(default_factory=lambda: RULE)

    def __post_init__(self) -> None:
        self.kids = Children(self.workdir)
        self.api_port = free_port()
        self.base = f"http://127.0.0.1:{self.api_port}"
        self.db = Db(plain_pg_dsn(self.database_url))
        self._n = 0
        self.bouncer = PgBouncer(self.database_url) if self.pgbouncer != "off" else None

    def env(self) -> dict[str, str]:
        extra = {"CAREFLOW_SMTP_URL": self.sink.url, "CAREFLOW_LOG_LEVEL": "INFO"}
        if self.bouncer is None:
            return careflow_env(self.database_url, **(extra | self.extra_env))
        extra["CAREFLOW_DATABASE_POOLER"] = "pgbouncer"
        if self.pgbouncer == "listen":
            extra["CAREFLOW_DATABASE_LISTEN_URL"] = self.database_url
        return careflow_env(self.bouncer.url, **(extra | self.extra_env))

    def start(self, workers: int) -> None:
        self.load_before = loadavg()
        reset_database(self.database_url)
        self.sink.start()
        if self.bouncer is not None:
            self.bouncer.start(self.kids)
        self.admin = mint_token(self.database_url, "admin")
        self.service = mint_token(self.database_url, "service")
        self.serve = self.kids.start(
            "serve", careflow_cmd("serve", "--no-worker", "--port", str(self.api_port)), self.env()
        )
        for _ in range(workers):
            self.start_worker()
        wait_http(f"{self.base}/healthz", self.kids)
        created = httpx.post(
            f"{self.base}/v1/automations/rules",
            json=self.rule,
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=30,
        )
        if created.status_code != 201:
            raise RuntimeError(f"rule not created: {created.status_code} {created.text}")

    async def astart(self, workers: int) -> None:
        """``start`` off the event loop (``reset_database`` runs its own loop)."""
        await asyncio.to_thread(self.start, workers)

    def start_worker(self) -> str:
        name = f"worker{self._n}"
        self._n += 1
        cmd = careflow_cmd("worker")
        if self.concurrency:
            cmd += ["--concurrency", str(self.concurrency)]
        self.workers[name] = self.kids.start(name, cmd, self.env())
        return name

    def alive_workers(self) -> list[str]:
        return [n for n, p in self.workers.items() if p.poll() is None]

    def signal_worker(self, name: str, sig: signal.Signals) -> None:
        self.workers[name].send_signal(sig)
        if sig == signal.SIGKILL:
            self.workers[name].wait(timeout=10)
            self.killed.add(name)

    def unexpected_exits(self) -> dict[str, int | None]:
        """Workers (and the API) that exited without the drill killing them."""
        out = {}
        for name, proc in [("serve", self.serve), *self.workers.items()]:
            if name not in self.killed and proc.poll() is not None:
                out[name] = proc.returncode
        return out

    def log_events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines of one child (structlog on stderr, captured to its log file)."""
        out = []
        for line in self.workdir.log(name).read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    out.append(json.loads(line))
        return out

    def count_log_event(self, event: str, names: list[str] | None = None) -> dict[str, int]:
        names = names if names is not None else list(self.workers)
        return {n: sum(1 for e in self.log_events(n) if e.get("event") == event) for n in names}

    def stop(self) -> None:
        self.kids.stop_all()
        self.sink.stop()

    # -- traffic --------------------------------------------------------------------------

    async def post_events(
        self,
        ids: range,
        *,
        concurrency: int = 8,
        rate: float | None = None,
        deadline: float,
        prefix: str = "drill",
        stop: asyncio.Event | None = None,
    ) -> PostStats:
        """Post ``patient.onboarded`` for each number in ``ids``, at most ``rate`` per second.

        A producer retries with the same ``event_id`` (idempotent: 202 first, 200 after) until
        it gets a 2xx, up to 20 tries or the deadline; an event is *accepted* once it did.
        """
        stats = PostStats()
        pending = iter(ids)
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {self.service}"}
        async with httpx.AsyncClient(base_url=self.base, headers=headers, timeout=30) as client:

            async def one(n: int) -> None:
                for _ in range(20):
                    if time.monotonic() >= deadline:
                        break
                    try:
                        response = await client.post("/v1/events", json=onboarded(prefix, n))
                        stats.statuses[response.status_code] += 1
                        if response.status_code in (200, 202):
                            stats.accepted.add(f"{prefix}-{n}")
                            return
                    except httpx.HTTPError as exc:
                        stats.statuses[type(exc).__name__] += 1
                    await asyncio.sleep(1.0)
                stats.given_up += 1

            async def loop() -> None:
                for n in pending:
                    if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                        return
                    if rate:
                        # Pace the whole posting, not each connection.
                        due = started + stats.sent / rate
                        stats.sent += 1
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                    else:
                        stats.sent += 1
                    await one(n)

            await asyncio.gather(*(loop() for _ in range(concurrency)))
        stats.seconds = time.monotonic() - started
        return stats

    async def probe(self, name: str, within: float = 120.0) -> float | None:
        """Post one event and time it until its execution is ``success`` (None: not within)."""
        headers = {"Authorization": f"Bearer {self.service}"}
        started = time.monotonic()
        deadline = started + within
        async with httpx.AsyncClient(base_url=self.base, headers=headers, timeout=30) as client:
            while time.monotonic() < deadline:
                try:
                    response = await client.post("/v1/events", json=onboarded("probe", name))
                    if response.status_code in (200, 202):
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
            else:
                return None
        sql = (
            "SELECT x.status FROM executions x JOIN events e ON e.id = x.event_pk"
            " WHERE e.event_id = $1"
        )
        while time.monotonic() < deadline:
            if await self.db.try_val(sql, f"probe-{name}") == "success":
                return time.monotonic() - started
            await asyncio.sleep(0.05)
        return None

    async def progress(self) -> dict[str, int]:
        rows = await self.db.fetch("SELECT status, count(*) FROM executions GROUP BY status")
        return {r[0]: int(r[1]) for r in rows}

    async def wait_all_finished(
        self,
        expected: int,
        *,
        within: float,
        stall: float = 90.0,
        tick: Callable[[], Any] | None = None,
    ) -> float:
        """Wait until ``expected`` executions exist and none is running; returns seconds waited."""
        started = time.monotonic()
        best, progressed_at = -1, started
        while time.monotonic() - started < within:
            if tick is not None:
                await tick()
            try:
                counts = await self.progress()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                await asyncio.sleep(1)
                continue
            finished = sum(v for k, v in counts.items() if k != "running")
            if finished > best:
                best, progressed_at = finished, time.monotonic()
            if finished >= expected and counts.get("running", 0) == 0:
                break
            if time.monotonic() - progressed_at > stall:
                console.print(f"[red]no execution finished for {stall:.0f} s: stopping the wait")
                break
            await asyncio.sleep(0.5)
        return time.monotonic() - started

    # -- invariants -----------------------------------------------------------------------

    async def verify(self, accepted: set[str], settle_seconds: float = 10.0) -> Verdict:
        """Check every invariant of the run; ``accepted`` are the event ids answered 2xx."""
        db = self.db
        v = Verdict()
        stored = {r[0] for r in await db.fetch("SELECT event_id FROM events")}
        lost_events = accepted - stored
        v.add("accepted events (2xx) / stored", f"{len(accepted):,} / {len(stored):,}")
        v.check("accepted events missing from the events table", len(lost_events), 0)

        rows = await db.fetch(
            "SELECT e.event_id, count(x.id) AS n, count(*) FILTER (WHERE x.status = 'success')"
            " AS ok FROM events e LEFT JOIN executions x ON x.event_pk = e.id"
            " WHERE e.type = 'patient.onboarded' GROUP BY e.event_id"
        )
        no_exec = sum(1 for r in rows if r["n"] == 0)
        multi = sum(1 for r in rows if r["n"] > 1)
        not_ok = sum(1 for r in rows if r["n"] == 1 and r["ok"] == 0)
        statuses = {
            r[0]: int(r[1])
            for r in await db.fetch("SELECT status, count(*) FROM executions GROUP BY status")
        }
        v.add("executions by status", ", ".join(f"{k} {n:,}" for k, n in sorted(statuses.items())))
        v.check("events without an execution (lost)", no_exec, 0)
        v.check("events with more than one execution", multi, 0)
        v.check("executions not success", not_ok, 0)

        events_n = len(rows)
        forms = await db.val("SELECT count(*) FROM forms")
        dup_forms = await db.val(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM forms"
            " GROUP BY organization_id, patient_id, form_template_id) f"
        )
        v.add("forms / events", f"{forms:,} / {events_n:,}")
        v.check("forms duplicated (patient + template)", int(dup_forms), 0)
        v.check("events without their form", max(0, events_n - int(forms) + int(dup_forms)), 0)
        members = await db.val("SELECT count(*) FROM segment_members")
        dup_members = await db.val(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM segment_members"
            " GROUP BY organization_id, segment_id, patient_id) s"
        )
        v.add("segment memberships / events", f"{members:,} / {events_n:,}")
        v.check("segment memberships duplicated", int(dup_members), 0)
        v.check(
            "events without their segment membership",
            max(0, events_n - int(members) + int(dup_members)),
            0,
        )

        installation_id = str(await db.val("SELECT installation_id FROM installation"))
        expected_ids = {
            message_id_for(installation_id, r[0])
            for r in await db.fetch(
                "SELECT id FROM executions WHERE trigger_event = 'patient.onboarded'"
            )
        }
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline:
            if not expected_ids - set(self.sink.snapshot()):
                break
            await asyncio.sleep(0.2)
        seen = self.sink.snapshot()
        missing = expected_ids - set(seen)
        unexpected = set(seen) - expected_ids
        raw_dups = sum(c - 1 for c in seen.values() if c > 1)
        v.add("emails at the sink / unique Message-IDs", f"{sum(seen.values()):,} / {len(seen):,}")
        v.check("expected Message-IDs not seen at the sink", len(missing), 0)
        v.check("Message-IDs at the sink no execution accounts for", len(unexpected), 0)
        v.add("raw duplicate deliveries (same Message-ID again)", str(raw_dups))
        messages = {
            r[0]: int(r[1])
            for r in await db.fetch("SELECT status, count(*) FROM messages GROUP BY status")
        }
        v.add("messages rows by status", ", ".join(f"{k} {n:,}" for k, n in messages.items()))
        jobs = {
            r[0]: int(r[1])
            for r in await db.fetch("SELECT status, count(*) FROM jobs GROUP BY status")
        }
        v.check("jobs left dead", jobs.get("dead", 0), 0)
        v.add("jobs left queued / running", f"{jobs.get('queued', 0)} / {jobs.get('running', 0)}")
        retried = await db.val("SELECT count(*) FROM execution_actions WHERE attempts > 1")
        v.add("actions that needed more than one attempt", f"{int(retried):,}")
        v.add("load average (1 min) at start / at check", f"{self.load_before} / {loadavg()}")
        return v


@dataclass
class PostStats:
    statuses: Counter[Any] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    sent: int = 0
    given_up: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        parts = ", ".join(f"{k}: {v:,}" for k, v in sorted(self.statuses.items(), key=str))
        return f"{len(self.accepted):,} accepted in {self.seconds:.0f} s ({parts})"


@dataclass
class Verdict:
    """Rows of the result table; ``failures`` are the broken invariants."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, what: str, value: str) -> None:
        self.rows.append((what, value, ""))

    def check(self, what: str, value: Any, expected: Any, ok: bool | None = None) -> None:
        passed = (value == expected) if ok is None else ok
        self.rows.append((what, fmt_value(value), "ok" if passed else "VIOLATED"))
        if not passed:
            self.failures.append(f"{what}: {fmt_value(value)}")

    def extend(self, other: Verdict) -> None:
        self.rows += other.rows
        self.failures += other.failures

    def print(self, title: str) -> None:
        table = Table(title=title)
        table.add_column("measure / invariant")
        table.add_column("value", justify="right")
        table.add_column("", justify="center")
        for what, value, mark in self.rows:
            style = "red" if mark == "VIOLATED" else None
            table.add_row(what, value, mark, style=style)
        console.print(table)
        if self.failures:
            console.print("[red]FAILED:[/red] " + "; ".join(self.failures))
        else:
            console.print("[green]PASSED[/green]: every invariant held")

    def exit_code(self) -> int:
        return 1 if self.failures else 0


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def onboarded(prefix: str, n: int | str) -> dict[str, Any]:
    return {
        "event_id": f"{prefix}-{n}",
        "type": "patient.onboarded",
        "data": {
            "patient": {
                "id": f"{prefix}-p{n}",
                "email": f"{prefix}{n}@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "timezone": "Europe/London",
            }
        },
    }


def latency_summary(values: list[float | None]) -> str:
    got = sorted(v for v in values if v is not None)
    lost = len(values) - len(got)
    if not got:
        return f"n={len(values)}, none finished"
    return (
        f"n={len(values)} p50 {percentile(got, 0.5):.2f} s, p95 {percentile(got, 0.95):.2f} s,"
        f" max {got[-1]:.2f} s" + (f", {lost} not finished" if lost else "")
    )


def common_args(parser: Any) -> None:
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument("--seed", type=int, default=None, help="random seed (kills, jitter)")
    parser.add_argument(
        "--pgbouncer",
        choices=["off", "listen", "polling"],
        default="off",
        help="careflow behind a PgBouncer in transaction mode that the drill starts: workers"
        " LISTEN on the direct URL (listen) or poll alone (polling)",
    )


def seed(value: int | None) -> random.Random:
    return random.Random(value)


def header(title: str, params: dict[str, Any]) -> None:
    console.rule(title)
    console.print(", ".join(f"{k}={v}" for k, v in params.items()) + f"; load 1m {loadavg()}")


def vm_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- latency under a fault (drills 4 and 5) ------------------------------------------------


@dataclass
class Probe:
    posted_at: float  # seconds since the run started
    latency: float | None  # POST → execution success; None: not within the probe's limit


@dataclass
class LatencyRun:
    stats: PostStats
    probes: list[Probe]
    fault_at: float | None  # seconds since start; None when the fault was skipped
    fault_info: dict[str, Any]


async def latency_drill(
    cluster: Cluster,
    *,
    rate: float,
    baseline: float,
    after: float,
    probe_every: float,
    fault: Callable[[], Any],
) -> LatencyRun:
    """Steady background events + a timed probe every ``probe_every`` s; ``fault`` after
    ``baseline`` s; probes and load go on for ``after`` s past the fault."""
    started = time.monotonic()
    stop = asyncio.Event()
    posting = asyncio.create_task(
        cluster.post_events(
            range(1_000_000),
            concurrency=4,
            rate=rate,
            deadline=started + baseline + after + 900,
            stop=stop,
        )
    )
    probes: list[Probe] = []

    async def one(k: int) -> None:
        posted = time.monotonic() - started
        probes.append(Probe(posted, await cluster.probe(str(k), within=120)))

    async def prober() -> None:
        tasks = []
        for k in range(10_000):
            if stop.is_set():
                break
            tasks.append(asyncio.create_task(one(k)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), probe_every)
        await asyncio.gather(*tasks)

    probing = asyncio.create_task(prober())
    await asyncio.sleep(baseline)
    called = time.monotonic()
    info: dict[str, Any] = await fault() or {}
    # A fault that waits first (for a quiet moment) says when it actually struck.
    struck = info.get("struck_at", called)
    fault_at = None if info.get("skipped") else struck - started
    await asyncio.sleep(after)
    stop.set()
    stats = await posting
    await probing
    probes.sort(key=lambda p: p.posted_at)
    return LatencyRun(stats, probes, fault_at, info)


def judge_latency(run: LatencyRun, verdict: Verdict, recover_within: float = 30.0) -> None:
    """Rows for the probes, and the invariant: back to normal ``recover_within`` s after."""
    if run.fault_at is None:
        verdict.add("probe latency (no fault)", latency_summary([p.latency for p in run.probes]))
        return
    before = [p for p in run.probes if p.posted_at < run.fault_at]
    during = [p for p in run.probes if run.fault_at <= p.posted_at < run.fault_at + recover_within]
    late = [p for p in run.probes if p.posted_at >= run.fault_at + recover_within]
    base = sorted(p.latency for p in before if p.latency is not None)
    p95 = percentile(base, 0.95) if base else 5.0
    threshold = max(2 * p95, p95 + 1.0)
    verdict.add("probe latency before the fault", latency_summary([p.latency for p in before]))
    verdict.add(
        f"probe latency 0-{recover_within:.0f} s after",
        latency_summary([p.latency for p in during]),
    )
    verdict.add(
        f"probe latency ≥ {recover_within:.0f} s after", latency_summary([p.latency for p in late])
    )
    verdict.add("normal = at most max(2 x p95 before, p95 + 1 s)", f"{threshold:.2f} s")
    after = [p for p in run.probes if p.posted_at >= run.fault_at]
    recovered_at = 0.0
    for i, p in enumerate(after):
        if p.latency is None or p.latency > threshold:
            recovered_at = after[i + 1].posted_at - run.fault_at if i + 1 < len(after) else 1e9
    verdict.check(
        "probes posted after the fault that never finished",
        sum(1 for p in after if p.latency is None),
        0,
    )
    verdict.check(
        "latency back to normal (probes posted from then on all normal)",
        f"{recovered_at:.1f} s after the fault" if recovered_at < 1e9 else "never",
        f"≤ {recover_within:.0f} s",
        ok=recovered_at <= recover_within and bool(late),
    )


def listener_rows(cluster: Cluster, verdict: Verdict) -> None:
    """Per worker: LISTEN connections made and lost, claim failures, from its JSON log."""
    alive = cluster.alive_workers()
    for name in alive:
        events = Counter(e.get("event") for e in cluster.log_events(name))
        verdict.add(
            f"{name} log: listening / connection_lost / listen_failed / claim_failed / db_back",
            " / ".join(
                str(events.get(f"jobs.{ev}", 0))
                for ev in (
                    "listening",
                    "listen_connection_lost",
                    "listen_failed",
                    "claim_failed",
                    "database_back",
                )
            ),
        )
    if cluster.pgbouncer == "polling":
        verdict.add("workers' LISTEN", "none: behind PgBouncer with no listen URL, they poll")
        return
    relistened = [
        n
        for n in alive
        if sum(1 for e in cluster.log_events(n) if e.get("event") == "jobs.listening") >= 2
    ]
    verdict.check(
        "workers that re-established LISTEN after the fault",
        f"{len(relistened)} of {len(alive)}",
        "",
        ok=len(relistened) == len(alive) and bool(alive),
    )
