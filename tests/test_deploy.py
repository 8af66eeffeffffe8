"""deploy/ as an operator uses it: the systemd units start the real CLI with the example
environment file (and pass `systemd-analyze verify`), and careflow runs through PgBouncer
configured from the example pgbouncer.ini."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.config import Settings
from tests.fixtures import database as test_db
from tests.fixtures.smtp import free_port

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = DEPLOY / "systemd"
ENV_FILE = DEPLOY / "careflow.env.example"
PGBOUNCER_INI = DEPLOY / "pgbouncer" / "pgbouncer.ini"
INSTALLED_CLI = "/opt/careflow/.venv/bin/careflow"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string((UNITS / name).read_text())
    return parser


def environment_file(path: Path) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile= reads the ones the example uses."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        assert sep and key == key.strip() and value == value.strip(), raw
        assert not value.startswith(("'", '"')), raw
        values[key] = value
    return values


def cli_argv(exec_start: str, instance: str) -> list[str]:
    """ExecStart as a test can run it: this checkout's careflow instead of the installed one."""
    argv = shlex.split(exec_start.replace("%i", instance))
    assert argv[0] == INSTALLED_CLI
    return [sys.executable, "-m", "careflow.cli", *argv[1:]]


def wait_for(condition: Callable[[], bool], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def careflow_env(database_url: str, directory: Path) -> dict[str, str]:
    """The example file, pointed at the test database the way the tests reach it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_")}
    env.update(environment_file(ENV_FILE))
    env["CAREFLOW_DATABASE_URL"] = database_url
    env["CAREFLOW_DATABASE_POOLER"] = ""
    env["CAREFLOW_DATABASE_LISTEN_URL"] = ""
    env.update(test_db.database_env(database_url))
    return env


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


class TestExampleEnvironment:
    def test_every_key_is_a_setting_and_production_accepts_them(self) -> None:
        values = environment_file(ENV_FILE)
        fields = {f"CAREFLOW_{name.upper()}" for name in Settings.model_fields}
        assert set(values) <= fields, set(values) - fields
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            **{key.removeprefix("CAREFLOW_").lower(): value for key, value in values.items()},
        )
        assert settings.env == "production"
        assert settings.behind_pooler and settings.database_listen_url is not None


class TestSystemdUnits:
    @pytest.mark.parametrize(
        ("name", "command"),
        [
            ("careflow-api@.service", "serve --no-worker --host 127.0.0.1 --port %i"),
            ("careflow-worker@.service", "worker"),
        ],
    )
    def test_units_run_the_cli_with_the_example_environment(self, name: str, command: str) -> None:
        service = unit(name)["Service"]
        assert service["ExecStart"] == f"{INSTALLED_CLI} {command}"
        assert service["EnvironmentFile"] == "/etc/careflow/careflow.env"
        assert service["Restart"] == "on-failure"
        assert service["User"] == "careflow"

    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
    def test_systemd_analyze_verify(self, tmp_path: Path) -> None:
        # With this checkout's careflow in place of the installed one, which verify checks.
        careflow = Path(sys.executable).parent / "careflow"
        if not careflow.exists():
            pytest.skip("careflow is not installed as a command in this environment")
        paths = []
        for name, instance in (
            ("careflow-api@.service", "8000"),
            ("careflow-worker@.service", "1"),
        ):
            text = (UNITS / name).read_text().replace(INSTALLED_CLI, str(careflow))
            path = tmp_path / name.replace("@.", f"@{instance}.")
            path.write_text(text)
            paths.append(str(path))
        out = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *paths],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stderr == "", out.stderr

    def test_the_api_unit_serves(
        self,
        engine: AsyncEngine,
        database_url: str,
        tmp_path: Path,
        running: list[subprocess.Popen[bytes]],
    ) -> None:
        port = free_port()
        log = tmp_path / "api.log"
        argv = cli_argv(unit("careflow-api@.service")["Service"]["ExecStart"], str(port))
        proc = subprocess.Popen(
            argv,
            env=careflow_env(database_url, tmp_path),
            cwd=tmp_path,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        running.append(proc)
        wait_for(lambda: "listening on" in log.read_text() or proc.poll() is not None, "serve")
        assert f"listening on http://127.0.0.1:{port}" in log.read_text(), log.read_text()
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)

    def test_the_worker_unit_works_and_stops_on_sigterm(
        self,
        engine: AsyncEngine,
        database_url: str,
        tmp_path: Path,
        running: list[subprocess.Popen[bytes]],
    ) -> None:
        log = tmp_path / "worker.log"
        argv = cli_argv(unit("careflow-worker@.service")["Service"]["ExecStart"], "1")
        proc = subprocess.Popen(
            argv,
            env=careflow_env(database_url, tmp_path),
            cwd=tmp_path,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        running.append(proc)
        wait_for(
            lambda: "jobs.worker_started" in log.read_text() or proc.poll() is not None, "worker"
        )
        assert "jobs.worker_started" in log.read_text(), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        assert "jobs.worker_stopped" in log.read_text()


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    directories: list[Path] = []
    yield directories
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def pgbouncer_binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found is None and Path("/usr/sbin/pgbouncer").exists():
        found = "/usr/sbin/pgbouncer"
    return found


class TestPgBouncerExample:
    def test_the_settings_careflow_needs(self) -> None:
        config = configparser.ConfigParser(interpolation=None)
        config.read_string(PGBOUNCER_INI.read_text())
        pgbouncer = config["pgbouncer"]
        assert pgbouncer["pool_mode"] == "transaction"
        assert pgbouncer["idle_transaction_timeout"] == "120"
        assert pgbouncer["ignore_startup_parameters"] == "extra_float_digits"
        # The example env file's pooled URL is this pooler's address and database.
        pooled = make_url(environment_file(ENV_FILE)["CAREFLOW_DATABASE_URL"])
        assert (pooled.host, str(pooled.port)) == (
            pgbouncer["listen_addr"],
            pgbouncer["listen_port"],
        )
        assert pooled.database in config["databases"]

    def test_careflow_migrates_and_serves_through_it(
        self,
        engine: AsyncEngine,
        database_url: str,
        tmp_path: Path,
        running: list[subprocess.Popen[bytes]],
        cleanup: list[Path],
    ) -> None:
        binary = pgbouncer_binary()
        direct = test_db.direct_url(database_url) if database_url.startswith("postgres") else None
        if binary is None or direct is None:
            pytest.skip("needs the pgbouncer binary and a direct PostgreSQL test database")
        server = make_url(direct)
        config = configparser.ConfigParser(interpolation=None)
        config.optionxform = str  # type: ignore[assignment,method-assign]
        config.read_string(PGBOUNCER_INI.read_text())
        # What differs on this machine: addresses, files, and trust instead of passwords.
        config.remove_section("databases")
        config["databases"] = {
            server.database: f"host={server.host} port={server.port or 5432} "
            f"dbname={server.database}"
        }
        port = free_port()
        # Outside pytest's temporary directories, which only root may enter.
        directory = Path(tempfile.mkdtemp(prefix="careflow-pgbouncer-"))
        cleanup.append(directory)
        config["pgbouncer"].update(
            {
                "listen_port": str(port),
                "unix_socket_dir": "",
                "auth_type": "trust",
                "auth_file": str(directory / "userlist.txt"),
                "logfile": str(directory / "pgbouncer.log"),
                "pidfile": str(directory / "pgbouncer.pid"),
            }
        )
        (directory / "userlist.txt").write_text(f'"{server.username}" ""\n')
        with (directory / "pgbouncer.ini").open("w") as f:
            config.write(f)
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
            shutil.chown(directory, "postgres")
            for path in directory.iterdir():
                shutil.chown(path, "postgres")
        pooler = subprocess.Popen(
            [binary, "-q", str(directory / "pgbouncer.ini")], stdout=subprocess.DEVNULL, **as_user
        )
        running.append(pooler)

        def accepting() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(lambda: accepting() or pooler.poll() is not None, "pgbouncer", within=30)
        log_file = directory / "pgbouncer.log"
        assert pooler.poll() is None, log_file.read_text() if log_file.exists() else "no log"

        pooled = server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        env = careflow_env(pooled, tmp_path)
        env["CAREFLOW_DATABASE_POOLER"] = "pgbouncer"
        env["CAREFLOW_DATABASE_LISTEN_URL"] = direct
        migrated = subprocess.run(
            [sys.executable, "-m", "careflow.cli", "migrate"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.stdout == "migrations applied\n"

        api_port = free_port()
        log = tmp_path / "api.log"
        argv = cli_argv(unit("careflow-api@.service")["Service"]["ExecStart"], str(api_port))
        api = subprocess.Popen(
            argv, env=env, cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        running.insert(0, api)
        wait_for(lambda: "listening on" in log.read_text() or api.poll() is not None, "serve")
        ready = httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=10)
        assert ready.status_code == 200, (ready.text, log.read_text())
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)
        pooler.terminate()  # SIGTERM: PgBouncer's immediate shutdown
        pooler.wait(timeout=30)
