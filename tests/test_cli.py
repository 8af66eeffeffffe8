"""The `careflow` command as a user runs it: serve on a fresh SQLite file, token, migrate, demo,
and what it says when something is wrong (one line on stderr, a non-zero exit)."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.fixtures import database as test_db
from tests.fixtures.smtp import free_port

SECRET = "cli-test-secret-that-is-long-enough-for-hs256"


def careflow(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "careflow.cli", *args],
        cwd=cwd,
        env={**clean_environment(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def clean_environment() -> dict[str, str]:
    """This process's environment without careflow's settings: each test sets its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_")}


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def served(fresh_dir: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`careflow serve` in an empty directory: it creates and migrates ./careflow.db itself."""
    port = free_port()
    env = {
        **os.environ,
        "CAREFLOW_JWT_SECRET": SECRET,
        "CAREFLOW_DATABASE_URL": "sqlite+aiosqlite:///./careflow.db",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "careflow.cli", "serve", "--port", str(port)],
        cwd=fresh_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("careflow serve did not come up")
    try:
        yield base, env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class TestServe:
    def test_fresh_directory_serves_docs_and_catalogs_with_a_cli_token(
        self, served: tuple[str, dict[str, str]], fresh_dir: Path
    ) -> None:
        base, env = served
        assert (fresh_dir / "careflow.db").exists()
        assert httpx.get(f"{base}/docs").status_code == 200
        assert httpx.get(f"{base}/readyz").json()["status"] == "ok"
        minted = careflow("token", "--org", "1", "--role", "admin", cwd=fresh_dir, env=env)
        assert minted.returncode == 0, minted.stderr
        headers = {"Authorization": f"Bearer {minted.stdout.strip()}"}
        triggers = httpx.get(f"{base}/v1/automations/triggers", headers=headers)
        actions = httpx.get(f"{base}/v1/automations/actions", headers=headers)
        assert triggers.status_code == actions.status_code == 200
        assert "appointment.before_start" in {t["event"] for t in triggers.json()["data"]}
        assert {"require_form", "send_email", "send_sms", "update_segment"} <= {
            a["type"] for a in actions.json()["data"]
        }
        assert httpx.get(f"{base}/v1/automations/triggers").status_code == 401


class TestToken:
    def test_unknown_role_is_refused(self, fresh_dir: Path) -> None:
        out = careflow(
            "token", "--role", "superuser", cwd=fresh_dir, env={"CAREFLOW_JWT_SECRET": SECRET}
        )
        assert out.returncode != 0
        assert "unknown role" in out.stderr

    def test_claims(self, fresh_dir: Path) -> None:
        import jwt

        out = careflow(
            "token",
            "--org",
            "7",
            "--role",
            "service",
            "--sub",
            "svc_host",
            cwd=fresh_dir,
            env={"CAREFLOW_JWT_SECRET": SECRET},
        )
        claims = jwt.decode(out.stdout.strip(), SECRET, algorithms=["HS256"])
        assert (claims["org_id"], claims["role"], claims["sub"]) == (7, "service", "svc_host")
        assert claims["exp"] > time.time()


class TestConsoleUrl:
    def test_a_one_time_link_signs_in_to_the_served_console_once(
        self, served: tuple[str, dict[str, str]], fresh_dir: Path
    ) -> None:
        base, env = served
        out = careflow(
            "console-url", "--org", "4", "--role", "specialist", "--url", base,
            cwd=fresh_dir, env=env,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        link = one_line(out.stdout)
        assert link.startswith(f"{base}/console/login?ticket=")
        with httpx.Client() as browser:
            signed_in = browser.get(link, follow_redirects=True)
            assert signed_in.status_code == 200
            assert str(signed_in.url) == f"{base}/console"
            assert "Organisation 4" in signed_in.text and "(specialist)" in signed_in.text
        again = httpx.get(link)
        assert again.status_code == 401
        assert "used already" in again.text

    def test_unknown_role_is_refused(self, fresh_dir: Path) -> None:
        out = careflow("console-url", "--role", "root", cwd=fresh_dir)
        assert out.returncode != 0
        assert "unknown role" in out.stderr


class TestMigrateAndSettings:
    def test_migrate_a_fresh_file(self, fresh_dir: Path) -> None:
        out = careflow(
            "migrate",
            cwd=fresh_dir,
            env={
                "CAREFLOW_DATABASE_URL": "sqlite+aiosqlite:///./m.db",
                "CAREFLOW_JWT_SECRET": SECRET,
            },
        )
        assert out.returncode == 0, out.stderr
        assert (fresh_dir / "m.db").exists()

    @pytest.mark.parametrize("command", ["token", "migrate", "worker", "serve"])
    def test_production_refuses_the_development_secret_in_one_line(
        self, fresh_dir: Path, command: str
    ) -> None:
        out = careflow(command, cwd=fresh_dir, env={"CAREFLOW_ENV": "production"})
        assert out.returncode == 1
        line = one_line(out.stderr)
        assert "CAREFLOW_JWT_SECRET must be set in production" in line
        assert not (fresh_dir / "careflow.db").exists()  # refused before anything started


class TestDemo:
    def test_demo_runs_the_mission_end_to_end(self, fresh_dir: Path) -> None:
        out = careflow(
            "demo", "--database", str(fresh_dir / "demo.db"), cwd=fresh_dir, env={"COLUMNS": "200"}
        )
        assert out.returncode == 0, out.stderr[-2000:]
        text = out.stdout
        for heading in ("Executions", "Messages", "Forms", "Episodes"):
            assert heading in text
        assert "gate for patient 100: blocked" in text
        assert "the gate is open" in text
        assert "skipped" in text  # the rule whose conditions do not match


MISSING_DATABASE = "careflow_no_such_database"


def missing_databases() -> list[tuple[str, dict[str, str], str]]:
    """(URL, extra environment, what the error says: a pattern) for databases that cannot be reached:
    a SQLite file in a directory that does not exist, a PostgreSQL port nobody listens on,
    and, with a PostgreSQL test database, a database that server does not have."""
    cases = [
        (
            "sqlite+aiosqlite:///./no/such/directory/careflow.db",
            {},
            "unable to open database file",
        ),
        (
            f"postgresql+asyncpg://careflow:s3cret@127.0.0.1:{free_port()}/careflow",
            {},
            # asyncio's words, or uvloop's.
            "Connect call failed|Connection refused",
        ),
    ]
    url = test_db.test_database_url()
    if url.startswith("postgresql"):
        missing = make_url(url).set(database=MISSING_DATABASE)
        cases.append(
            (
                missing.render_as_string(hide_password=False),
                test_db.database_env(url, database=MISSING_DATABASE),
                MISSING_DATABASE,
            )
        )
    return cases


class TestErrorsInOneLine:
    @pytest.mark.parametrize("command", ["migrate", "worker", "serve"])
    @pytest.mark.parametrize(("url", "extra", "said"), missing_databases())
    def test_a_database_that_cannot_be_reached(
        self, fresh_dir: Path, command: str, url: str, extra: dict[str, str], said: str
    ) -> None:
        args = [command, "--port", str(free_port())] if command == "serve" else [command]
        out = careflow(
            *args,
            cwd=fresh_dir,
            env={"CAREFLOW_DATABASE_URL": url, "CAREFLOW_JWT_SECRET": SECRET, **extra},
        )
        assert out.returncode == 1
        line = one_line(out.stderr)
        assert line.startswith(
            ("careflow: error: cannot connect to the database ", "careflow: error: cannot open")
        )
        assert re.search(said, line), line
        assert "s3cret" not in line  # the URL is shown without its password
        assert out.stdout == ""

    def test_debug_shows_the_traceback(self, fresh_dir: Path) -> None:
        out = careflow(
            "--debug",
            "migrate",
            cwd=fresh_dir,
            env={
                "CAREFLOW_DATABASE_URL": f"postgresql+asyncpg://careflow@127.0.0.1:{free_port()}/c",
                "CAREFLOW_JWT_SECRET": SECRET,
            },
        )
        assert out.returncode == 1
        assert "Traceback (most recent call last)" in out.stderr
        assert "CommandError: cannot connect to the database" in out.stderr

    @pytest.mark.parametrize(
        "url",
        [
            "nonsense",
            "mysql://db.example/careflow",
            "postgresql://db/c",
            "postgresql+asyncpg://db:port/c",
        ],
    )
    def test_a_database_url_careflow_cannot_use(self, fresh_dir: Path, url: str) -> None:
        out = careflow("migrate", cwd=fresh_dir, env={"CAREFLOW_DATABASE_URL": url})
        assert out.returncode == 1
        line = one_line(out.stderr)
        assert (
            "CAREFLOW_DATABASE_URL: must be a sqlite+aiosqlite:// or postgresql+asyncpg://" in line
        )

    def test_a_busy_port_is_told_before_the_worker_starts(self, fresh_dir: Path) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            out = careflow(
                "serve",
                "--port",
                str(port),
                cwd=fresh_dir,
                env={
                    "CAREFLOW_JWT_SECRET": SECRET,
                    "CAREFLOW_DATABASE_URL": "sqlite+aiosqlite:///./careflow.db",
                },
            )
        assert out.returncode == 1
        assert one_line(out.stderr) == (
            f"careflow: error: port {port} on 127.0.0.1 is already in use "
            "(--debug shows the traceback)"
        )
        # Nothing started: no database file, no worker's log line.
        assert not (fresh_dir / "careflow.db").exists()


class TestExplainsItself:
    def test_version(self, fresh_dir: Path) -> None:
        out = careflow("--version", cwd=fresh_dir)
        assert out.returncode == 0
        assert out.stdout == f"careflow {version('careflow')}\n"
        assert version("careflow") == "0.2.0"

    @pytest.mark.parametrize(
        "command",
        [[], ["serve"], ["worker"], ["migrate"], ["token"], ["console-url"], ["demo"]],
    )
    @pytest.mark.parametrize("flag", ["-h", "--help"])
    def test_help_everywhere_with_readable_flags(
        self, fresh_dir: Path, command: list[str], flag: str
    ) -> None:
        out = careflow(*command, flag, cwd=fresh_dir)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("Usage: careflow")
        assert "-h, --help" in out.stdout
        assert "<bool>" not in out.stdout
        assert out.stderr == ""

    def test_serve_help_names_the_worker_switch(self, fresh_dir: Path) -> None:
        out = careflow("serve", "-h", cwd=fresh_dir)
        assert "--worker / --no-worker" in out.stdout

    @pytest.mark.parametrize("ttl", ["0", "-10"])
    def test_a_token_that_would_be_born_expired_is_refused(self, fresh_dir: Path, ttl: str) -> None:
        out = careflow("token", "--ttl", ttl, cwd=fresh_dir, env={"CAREFLOW_JWT_SECRET": SECRET})
        assert out.returncode == 2
        assert out.stdout == ""
        assert "Invalid value for '--ttl'" in out.stderr

    def test_no_library_warning_on_the_terminal(self, fresh_dir: Path) -> None:
        # The development secret, unset on purpose: still no Python warning for it.
        out = careflow("token", cwd=fresh_dir)
        assert out.returncode == 0
        assert out.stderr == ""

    def test_serve_says_where_it_listens(self, fresh_dir: Path) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "careflow.cli", "serve", "--port", "0", "--no-worker"],
            cwd=fresh_dir,
            env={**clean_environment(), "CAREFLOW_DATABASE_URL": "sqlite+aiosqlite:///./c.db"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            with selectors.DefaultSelector() as selector:
                selector.register(proc.stdout, selectors.EVENT_READ)
                assert selector.select(timeout=60), "no line from careflow serve"
            line = proc.stdout.readline()
            prefix = f"careflow {version('careflow')} listening on http://127.0.0.1:"
            assert line.startswith(prefix), line
            url = line.split(" listening on ", 1)[1].strip()
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        # uvicorn re-raises the SIGTERM it handled, once it has shut down cleanly.
        assert proc.returncode in (0, -signal.SIGTERM), err
        # Logs only, as JSON: the development secret's warning among them, no Python warning.
        assert "Warning" not in err
        assert '"event": "config.development_jwt_secret"' in err
