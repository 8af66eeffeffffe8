"""A real ``careflow serve`` for the conformance tests, and the client that talks to it.

Contract: ``running_serve`` starts the ``careflow`` command (the one installed beside the
test interpreter) in a temporary directory on a free port of 127.0.0.1, against a database
of its own, with a known JWT secret, an SMTP sink and fast job retries; it yields once
``/healthz`` answers and stops the process (SIGTERM, then SIGKILL) on exit. Tokens are signed
with the claims and secret ``careflow token`` uses (one test checks the CLI's own token), so
these tests use only HTTP and the CLI, never careflow's modules. ``ConformanceSmtp`` is the
suite's aiosmtpd sink that can also refuse chosen recipients (a mailbox that is down).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
from aiosmtpd.controller import Controller
from sqlalchemy.engine import make_url

from tests.fixtures.smtp import SmtpServer, SmtpSink, free_port

JWT_SECRET = "conformance-probe-secret-0123456789abcdef"  # 40 characters
START_TIMEOUT_S = 60.0


# --- SMTP -----------------------------------------------------------------------------------


@dataclass
class RefusingSink(SmtpSink):
    """The suite's sink, answering 451 to RCPT TO for the addresses in ``refused``."""

    refused: set[str] = field(default_factory=set)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        with self.lock:
            refuse = address in self.refused
        if refuse:
            return "451 4.3.0 Temporary failure"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def count_to(self, address: str) -> int:
        with self.lock:
            return sum(address in m.rcpt_tos for m in self.messages)

    def allow(self, address: str) -> None:
        with self.lock:
            self.refused.discard(address)


class ConformanceSmtp(SmtpServer):
    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.sink = RefusingSink(refused=set(refused))
        self.controller = Controller(self.sink, hostname="127.0.0.1", port=self.port)


# --- database -------------------------------------------------------------------------------


def serve_database_url(test_url: str | None, workdir: Path) -> str:
    """The serve process's own database: never the one the in-process tests truncate.

    SQLite (no test URL): a fresh file in ``workdir``. PostgreSQL: ``<name>_conformance`` on
    the same server, emptied by ``fresh_postgres_database``.
    """
    if not test_url:
        return f"sqlite+aiosqlite:///{workdir / 'careflow.db'}"
    url = make_url(test_url)
    return url.set(database=f"{url.database}_conformance").render_as_string(hide_password=False)


async def fresh_postgres_database(test_url: str, serve_url: str) -> None:
    """An empty serve database: created if missing, else its schema dropped and made again.

    Resetting the schema, not dropping the database, spares a checkpoint per run (tens of
    seconds on a loaded server); the database stays after the run, for a look at a failure.
    """

    async def connect(url: str) -> asyncpg.Connection:
        u = make_url(url)
        # No statement cache: the URL may lead through a transaction-mode pooler.
        return await asyncpg.connect(
            host=u.host,
            port=u.port,
            user=u.username,
            password=u.password,
            database=u.database,
            statement_cache_size=0,
        )

    name = make_url(serve_url).database
    admin = await connect(test_url)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    if exists:
        conn = await connect(serve_url)
        try:
            await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()


# --- the serve process ----------------------------------------------------------------------


def careflow_command() -> str:
    beside = Path(sys.executable).with_name("careflow")
    if beside.exists():
        return str(beside)
    found = shutil.which("careflow")
    if found is None:
        raise RuntimeError("the careflow command is not installed")
    return found


def serve_environment(database_url: str, smtp_url: str) -> dict[str, str]:
    # The caller's own CAREFLOW_* settings (a public key, an audience) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_")}
    env.update(
        {
            "CAREFLOW_JWT_SECRET": JWT_SECRET,
            "CAREFLOW_DATABASE_URL": database_url,
            "CAREFLOW_SMTP_URL": smtp_url,
            "CAREFLOW_ENV": "development",
            # Fast retries and polling, so a failing action ends within the tests' deadlines.
            "CAREFLOW_JOB_BACKOFF_BASE_SECONDS": "0.2",
            "CAREFLOW_JOB_POLL_INTERVAL_SECONDS": "0.2",
            "CAREFLOW_JOB_MAX_ATTEMPTS": "3",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@dataclass
class Serve:
    base_url: str
    env: dict[str, str]
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


@contextlib.contextmanager
def running_serve(workdir: Path, env: dict[str, str]) -> Iterator[Serve]:
    """``careflow migrate`` (serve migrates only SQLite itself), then ``careflow serve``."""
    careflow = careflow_command()
    if not env["CAREFLOW_DATABASE_URL"].startswith("sqlite"):
        subprocess.run(
            [careflow, "migrate"],
            cwd=workdir,
            env=env,
            capture_output=True,
            timeout=120,
            check=True,
        )
    port = free_port()
    serve = Serve(f"http://127.0.0.1:{port}", env, workdir / "serve.log")
    with serve.log_path.open("wb") as log:
        proc = subprocess.Popen(
            [careflow, "serve", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"careflow serve exited:\n{serve.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(serve.base_url + "/healthz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"careflow serve did not answer within {START_TIMEOUT_S} s")
                time.sleep(0.2)
            yield serve
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)


def sign_token(org: int, role: str, sub: str, ttl_seconds: int = 3600) -> str:
    """A token as ``careflow token`` signs it (HS256, the serve's secret), without a process.

    ``careflow token`` costs a Python start-up per token; the tests need a dozen callers, so
    they sign the same claims here, and ``test_errors`` checks once that the CLI's own token
    is accepted.
    """
    now = int(time.time())
    claims = {"sub": sub, "org_id": org, "role": role, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def cli_token(env: dict[str, str], org: int, role: str, sub: str) -> str:
    """``careflow token`` with the serve's settings: its last line."""
    out = subprocess.run(
        [careflow_command(), "token", "--org", str(org), "--role", role, "--sub", sub],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


class Api:
    """``api("GET", path, role="specialist", org=1)``: a request as that caller (None: no token)."""

    def __init__(self, client: httpx.Client, tokens: dict[tuple[int, str], str]) -> None:
        self.client = client
        self.tokens = tokens

    def __call__(
        self, method: str, path: str, role: str | None = "admin", org: int = 1, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", None) or {})
        if role is not None:
            headers["Authorization"] = f"Bearer {self.tokens[(org, role)]}"
        return self.client.request(method, path, headers=headers, **kw)


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="careflow-conformance-"))
