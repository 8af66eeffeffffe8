"""Helpers shared by the benchmark scripts: databases, child processes, ports, tokens, CPU.

Every child process is started by these helpers and stopped by them (SIGTERM, then SIGKILL
after a bounded wait); every wait has a deadline. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# bench/: scripts are named by their path under it (``perf/queue.py``).
BENCH_DIR = Path(__file__).resolve().parents[1]
JWT_SECRET = "careflow-bench-secret-not-for-production"
REFUSED_DATABASES = {"test", "postgres", "template0", "template1"}

# The peers that careflow is compared with, by import name: their pinned requirements. They
# live in their own environment (``bench/.peers``, gitignored), never in careflow's.
PEERS_DIR = BENCH_DIR / ".peers"
PEER_PACKAGES = {
    "pgqueuer": ["pgqueuer==1.6.0", "asyncpg"],
    "zen": ["zen-engine==2.1.3"],
    "celery": ["celery[redis]==5.*"],
    "psycopg": ["psycopg[binary]==3.*"],  # the Celery work task's driver
}


def is_postgres(url: str) -> bool:
    return url.startswith("postgresql")


def plain_pg_dsn(url: str) -> str:
    """``postgresql+asyncpg://…`` as the plain ``postgresql://…`` DSN asyncpg takes."""
    return "postgresql://" + url.split("://", 1)[1]


def sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1]


@dataclass
class Workdir:
    """A temporary directory for the run's SQLite file and the children's logs."""

    path: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="careflow-bench-")))

    def sqlite_url(self, name: str = "bench.db") -> str:
        return f"sqlite+aiosqlite:///{self.path / name}"

    def log(self, name: str) -> Path:
        return self.path / f"{name}.log"


def careflow_env(database_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CAREFLOW_DATABASE_URL": database_url,
            "CAREFLOW_JWT_SECRET": JWT_SECRET,
            "CAREFLOW_ENV": "development",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def careflow_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "careflow.cli", *args]


def reset_database(database_url: str) -> None:
    """Give the run an empty, migrated database.

    PostgreSQL: drop and re-create the ``public`` schema of the bench's own database
    (refusing ``test`` and the system databases). SQLite: the file must be new or is removed.
    """
    if is_postgres(database_url):
        dbname = database_url.rsplit("/", 1)[1].split("?", 1)[0]
        if dbname in REFUSED_DATABASES:
            raise SystemExit(f"refusing to reset database {dbname!r}: use a bench database")
        asyncio.run(_reset_pg_schema(plain_pg_dsn(database_url)))
    else:
        path = Path(sqlite_path(database_url))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
    subprocess.run(
        careflow_cmd("migrate"),
        env=careflow_env(database_url),
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )


async def _reset_pg_schema(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        await conn.execute("CREATE SCHEMA public")
    finally:
        await conn.close()


def peer_python(*imports: str) -> Path:
    """The peers' Python, created on first use, with the packages that ``imports`` need."""
    python = PEERS_DIR / "bin" / "python"
    if not python.exists():
        venv.create(PEERS_DIR, with_pip=True)
    if not imports:
        return python
    check = subprocess.run(
        [str(python), "-c", f"import {', '.join(imports)}"], capture_output=True, timeout=120
    )
    if check.returncode != 0:
        requirements = [r for name in imports for r in PEER_PACKAGES[name]]
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *requirements], check=True, timeout=600)
    return python


def run_json_script(script: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``bench/<script> ARGS --json`` (``script`` as ``perf/queue.py``) and return its
    last JSON line."""
    out = subprocess.run(
        [sys.executable, str(BENCH_DIR / script), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{script} failed:\n{out.stdout[-1500:]}{out.stderr[-1500:]}")
    return dict(json.loads(lines[-1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Children:
    """Child processes of one run, each logging to a file; all stopped on exit."""

    def __init__(self, workdir: Workdir) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, cmd: Sequence[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        logfile = self.workdir.log(name).open("ab")
        proc = subprocess.Popen(
            list(cmd), env=env, stdout=logfile, stderr=subprocess.STDOUT, cwd=cwd
        )
        logfile.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 40.0) -> int | None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]
        return proc.returncode

    def stop_tree(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        """Stop ``proc`` as above, then SIGKILL any of its descendants that outlived it."""
        descendants = process_tree(proc.pid) - {proc.pid}
        self.stop(proc, timeout)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_stat_fields(p) for p in descendants):
            time.sleep(0.1)
        for pid in descendants:
            if _stat_fields(pid) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for _, proc in list(reversed(self.procs)):
            self.stop(proc)

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = self.workdir.log(name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")


@contextlib.contextmanager
def children(workdir: Workdir) -> Iterator[Children]:
    kids = Children(workdir)
    try:
        yield kids
    finally:
        kids.stop_all()


def wait_http(url: str, kids: Children, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200 (e.g. /healthz), failing fast if a child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


def pg_analyze(dsn: str) -> None:
    """``ANALYZE`` the whole database, as autovacuum would have by the time a run is measured.

    Autovacuum is off on some machines. Then a table that was filled after the schema was
    reset has no statistics, and its planner takes an organisation's few rows for all of
    them: the snapshot lookup of each ingest batch scanned every snapshot (51 ms, not 1 ms).
    """

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    asyncio.run(run())


def mint_token(database_url: str, role: str, org: int = 1) -> str:
    out = subprocess.run(
        careflow_cmd("token", "--role", role, "--org", str(org)),
        env=careflow_env(database_url),
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def describe_db(url: str) -> str:
    return "PostgreSQL" if is_postgres(url) else "SQLite"


def fmt(value: Any, digits: int = 0) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.{digits}f}"
    return str(value)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing parenthesis.
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(pid: int) -> set[int]:
    """A process and its live descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (Linux /proc).

    CPU per unit of work is steadier than throughput on a shared machine: it does not
    grow when other work takes the cores, only when the code does more.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in process_tree(pid):
        fields = _stat_fields(p)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def server_cpu_seconds() -> dict[int, float]:
    """User + system CPU seconds of each live PostgreSQL server process on this machine,
    by pid (Linux /proc). Subtract two readings with ``server_cpu_delta``: a backend that
    began between them counts from zero; one that ended is missed, so read the second
    before the clients disconnect."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        if raw[raw.index("(") + 1 : raw.rindex(")")] != "postgres":
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def server_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL server: its live processes, and the backends that have
    exited (the postmaster has reaped them, so they are in its children times)."""
    stats: dict[int, list[str]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
            with open(f"/proc/{pid}/stat") as f:
                stats[int(pid)] = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
    ticks = 0
    for fields in stats.values():
        ticks += int(fields[11]) + int(fields[12])
        if int(fields[1]) not in stats:  # the postmaster: its parent is not a postgres
            ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    """The 1-minute load average: how busy the shared machine was (2 cores)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"
