"""The `careflow` command as a user runs it: serve on a fresh SQLite file, token, migrate, demo."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.smtp import free_port

SECRET = "cli-test-secret-that-is-long-enough-for-hs256"


def careflow(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "careflow.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


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

    def test_production_refuses_the_development_secret(self, fresh_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CAREFLOW_JWT_SECRET"}
        env["CAREFLOW_ENV"] = "production"
        out = subprocess.run(
            [sys.executable, "-m", "careflow.cli", "token"],
            cwd=fresh_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode != 0
        assert "CAREFLOW_JWT_SECRET must be set in production" in out.stderr


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
