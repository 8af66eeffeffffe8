"""A `careflow worker` killed with SIGKILL mid-execution: another takes over, nothing is lost
and no side effect is doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.executions.models import Execution
from careflow.forms.models import Form
from tests.conftest import TEST_SECRET
from tests.fixtures.database import database_env
from tests.fixtures.factories import PATIENT, create_rule, post_event
from tests.fixtures.smtp import SmtpServer

Auth = Callable[..., dict[str, str]]
PATIENTS = 30

CONSENT_AND_WELCOME = {
    "name": "Consent and welcome",
    "trigger_event": "patient.onboarded",
    "actions": [
        {"type": "require_form", "form_template_id": 42, "blocking": True},
        {"type": "require_form", "form_template_id": 43, "blocking": True},
        {"type": "send_email", "template": "welcome_patient"},
    ],
}


@pytest.fixture
def spawn_worker(
    database_url: str, smtp: SmtpServer, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "CAREFLOW_DATABASE_URL": database_url,
            **database_env(database_url),
            "CAREFLOW_ENV": "test",
            "CAREFLOW_JWT_SECRET": TEST_SECRET,
            "CAREFLOW_SMTP_URL": smtp.url,
            "CAREFLOW_JOB_LEASE_SECONDS": "2",
            "CAREFLOW_JOB_POLL_INTERVAL_SECONDS": "0.2",
            "CAREFLOW_LOG_LEVEL": "WARNING",
        }
        log = (tmp_path / f"worker-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "careflow.cli", "worker", "--concurrency", "4"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def finished(engine: AsyncEngine) -> int:
    async with create_sessionmaker(engine)() as session:
        value = await session.scalar(
            select(func.count()).select_from(Execution).where(Execution.status != "running")
        )
    return int(value or 0)


async def _all_finished(engine: AsyncEngine) -> bool:
    return await finished(engine) == PATIENTS


async def wait_for(check: Callable[[], object], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class TestWorkerKilledMidExecution:
    async def test_another_worker_finishes_everything_once(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        smtp: SmtpServer,
        spawn_worker: Callable[[], subprocess.Popen[bytes]],
    ) -> None:
        await create_rule(client, auth, CONSENT_AND_WELCOME)
        for i in range(PATIENTS):
            patient = {**PATIENT, "id": 1000 + i, "email": f"p{i}@example.com"}
            await post_event(client, auth, "patient.onboarded", {"patient": patient})
        smtp.sink.delay_seconds = 0.3  # keep the first worker busy inside its SMTP sends

        first = spawn_worker()
        await wait_for(lambda: len(smtp.sink.messages) >= 3, within=60, what="first emails")
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = len(smtp.sink.messages)
        assert killed_at < PATIENTS, "the first worker finished before it could be killed"

        smtp.sink.delay_seconds = 0.0
        second = spawn_worker()
        await wait_for(lambda: _all_finished(engine), within=90, what="every execution to finish")
        assert second.poll() is None, "the second worker exited"

        async with create_sessionmaker(engine)() as session:
            statuses = list(await session.scalars(select(Execution.status)))
            forms = list(await session.scalars(select(Form)))
        assert statuses == ["success"] * PATIENTS
        # Two forms per patient, never a second one for the same execution and action.
        assert len(forms) == 2 * PATIENTS
        assert len({(f.patient_id, f.form_template_id) for f in forms}) == 2 * PATIENTS

        ids = smtp.sink.message_ids()
        assert len(set(ids)) == PATIENTS, "an email was lost"
        duplicates = len(ids) - len(set(ids))
        # Only a send cut off between the server's acceptance and the worker's commit can be
        # repeated, and the repeat carries the same Message-ID for the receiver to drop.
        assert duplicates <= 4, f"{duplicates} raw duplicate deliveries"
        print(f"raw duplicate deliveries after SIGKILL: {duplicates}")
