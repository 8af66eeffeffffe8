"""PHI canaries: a patient's name, email and phone never reach logs, audit or error bodies.

The patient's identifying fields are unique strings. An end-to-end run exercises every
path that handles them — forms, email (with an SMTP failure and its retry), SMS through
Twilio (with a failure), segments, form completion, an appointment, validation errors that
carry them in bad fields — in this process and in a real ``careflow worker`` process. Then
no captured output, no audit row and no error body may contain any of them (operations.md:
"Logs carry ids only"; SPEC §10).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.audit.models import AuditEntry
from careflow.config import Settings
from careflow.db import create_sessionmaker
from tests.conftest import TEST_SECRET, make_settings
from tests.fixtures.database import database_env
from tests.fixtures.smtp import SmtpServer
from tests.fixtures.twilio import TwilioFake
from tests.jobs.conftest import eventually
from tests.security.conftest import (
    CANARIES,
    CANARY_EMAIL,
    CANARY_FIRST,
    CANARY_LAST,
    CANARY_PHONE,
    Auth,
    Drain,
    canary_patient,
)

TWILIO = {
    "sms_provider": "twilio",
    "twilio_account_sid": "AC00000000000000000000000000000000",
    "twilio_auth_token": "twilio-test-token",
    "twilio_from": "+15005550006",
}


@pytest.fixture
def settings(database_url: str, smtp: SmtpServer, twilio: TwilioFake) -> Settings:
    # Real transports for both channels, so their error paths run too.
    return make_settings(
        database_url,
        smtp_url=smtp.url,
        twilio_base_url=twilio.base_url,
        log_level="DEBUG",
        **TWILIO,
    )


RULES: list[dict[str, Any]] = [
    {
        "name": "Onboarding",
        "trigger_event": "patient.onboarded",
        "actions": [
            {"type": "require_form", "form_template_id": 42, "blocking": True},
            {"type": "send_email", "template": "welcome_patient"},
            {"type": "send_sms", "template": "welcome_patient"},
            {"type": "update_segment", "segment_id": 7, "action": "add"},
        ],
    },
    {
        "name": "Thanks for the form",
        "trigger_event": "form.completed",
        "actions": [
            {"type": "send_email", "template": "form_reminder"},
            {"type": "update_segment", "segment_id": 7, "action": "remove"},
        ],
    },
    {
        "name": "Booked",
        "trigger_event": "appointment.booked",
        "actions": [
            {"type": "send_email", "template": "appointment_reminder"},
            {"type": "send_sms", "template": "appointment_reminder"},
        ],
    },
]

# Requests that must fail validation while carrying the canaries in their bad fields.
BAD_REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/events", {"type": CANARY_FIRST, "data": {}}),
    (
        "POST",
        "/v1/events",
        {"type": "patient.onboarded", "occurred_at": CANARY_EMAIL, "data": {}},
    ),
    ("POST", "/v1/events", {"type": "patient.onboarded", "data": {"patient": CANARY_PHONE}}),
    (
        "POST",
        "/v1/events",
        {"type": "patient.onboarded", "data": {"patient": {"id": [CANARY_LAST]}}},
    ),
    ("POST", "/v1/events", {"type": "patient.onboarded", "data": {"patient": {"id": True}}}),
    ("POST", "/v1/events", {"type": "appointment.booked", "data": {"patient": canary_patient()}}),
    ("PUT", "/v1/entities/patient/100", {"id": CANARY_EMAIL, "email": CANARY_EMAIL}),
    ("PUT", f"/v1/entities/{CANARY_FIRST}/100", {"email": CANARY_EMAIL}),
    (
        "POST",
        "/v1/pathway-rules/resolve",
        {"trigger_type": CANARY_FIRST, "data": {"patient": canary_patient()}},
    ),
    (
        "POST",
        "/v1/automations/rules/1/test",
        {"trigger_entity_type": "patient", "trigger_entity_id": {"email": CANARY_EMAIL}},
    ),
    ("PATCH", "/v1/episodes/1", {"assignee": CANARY_EMAIL, "status": CANARY_FIRST}),
]


def assert_clean(where: str, text_: str) -> None:
    for canary in CANARIES:
        assert canary not in text_, f"{canary!r} found in {where}"


async def audit_text(engine: AsyncEngine) -> str:
    async with create_sessionmaker(engine)() as session:
        rows = (await session.scalars(select(AuditEntry))).all()
    assert rows, "the run should have written audit entries"
    return json.dumps(
        [{c.key: str(getattr(r, c.key)) for c in AuditEntry.__table__.columns} for r in rows]
    )


async def run_everything(
    client: httpx.AsyncClient,
    auth: Auth,
    drain: Drain,
    smtp: SmtpServer,
    twilio: TwilioFake,
) -> None:
    for rule in RULES:
        r = await client.post("/v1/automations/rules", json=rule, headers=auth())
        assert r.status_code == 201, r.text
    service = auth("service")
    smtp.sink.fail_next = 1  # the welcome email fails once, then is retried
    twilio.fail_next = 1  # and so does the SMS
    event = {
        "event_id": "evt-1",
        "type": "patient.onboarded",
        "data": {"patient": canary_patient()},
    }
    assert (await client.post("/v1/events", json=event, headers=service)).status_code == 202
    await drain(until_settled=True)

    forms = (await client.get("/v1/forms?patient_id=100", headers=auth())).json()["data"]
    assert len(forms) == 1
    r = await client.post(f"/v1/forms/{forms[0]['id']}/complete", headers=service)
    assert r.status_code == 200, r.text
    await drain(until_settled=True)

    booked = {
        "type": "appointment.booked",
        "data": {
            "appointment": {
                "id": 50,
                "patient_id": 100,
                "type": "video",
                "starts_at": "2025-02-20T09:00:00Z",
                "ends_at": "2025-02-20T09:30:00Z",
            },
            "patient": canary_patient(),
        },
    }
    assert (await client.post("/v1/events", json=booked, headers=service)).status_code == 202
    await drain(until_settled=True)

    # The run really went through the patient's data.
    assert any(CANARY_EMAIL in m.rcpt_tos for m in smtp.sink.messages)
    assert any(r["form"].get("To") == CANARY_PHONE for r in twilio.requests)
    executions = (await client.get("/v1/automations/executions", headers=auth())).json()
    assert executions["meta"]["total"] == 3
    # A preview names the recipient: that is its job, and it is not a log.
    r = await client.post(
        "/v1/automations/rules/1/test",
        json={"trigger_entity_type": "patient", "trigger_entity_id": 100},
        headers=auth(),
    )
    assert r.status_code == 200, r.text


class TestInProcess:
    async def test_no_canary_in_logs_audit_or_error_bodies(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        engine: AsyncEngine,
        smtp: SmtpServer,
        twilio: TwilioFake,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        await run_everything(client, auth, drain, smtp, twilio)

        for method, path, body in BAD_REQUESTS:
            for role in ("admin", "service"):
                r = await client.request(method, path, json=body, headers=auth(role))
                assert r.status_code in (400, 403, 404), (path, r.status_code, r.text)
                assert_clean(f"the answer to {method} {path} ({role})", r.text)

        out, err = capfd.readouterr()
        assert "action_finished" in err, "the logs should have been captured"
        assert "jobs.retried" in err, "the failures should have been retried"
        assert_clean("stdout", out)
        assert_clean("stderr", err)
        assert_clean("audit_log", await audit_text(engine))


class TestWorkerProcess:
    async def test_no_canary_in_a_real_workers_stderr(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        database_url: str,
        smtp: SmtpServer,
        twilio: TwilioFake,
        tmp_path: Path,
    ) -> None:
        for rule in RULES:
            assert (
                await client.post("/v1/automations/rules", json=rule, headers=auth())
            ).status_code == 201
        smtp.sink.fail_next = 1
        twilio.fail_next = 1
        event = {"type": "patient.onboarded", "data": {"patient": canary_patient()}}
        r = await client.post("/v1/events", json=event, headers=auth("service"))
        assert r.status_code == 202, r.text

        proc, log = spawn_worker(database_url, tmp_path, smtp, twilio)
        try:

            async def drained() -> bool:
                async with engine.connect() as conn:
                    jobs = (await conn.execute(text("SELECT count(*) FROM jobs"))).scalar_one()
                return int(jobs) == 0

            # Backoff after the failures is 1 s, 2 s: real time in a real process.
            await eventually(drained, within=60, interval=0.2)
        except AssertionError:
            print(log.read_text()[-5000:])
            raise
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        output = log.read_text()
        assert "action_finished" in output, output[-2000:]
        assert any(CANARY_EMAIL in m.rcpt_tos for m in smtp.sink.messages)
        assert_clean("the worker's stderr", output)
        assert_clean("audit_log", await audit_text(engine))


def spawn_worker(
    database_url: str, directory: Path, smtp: SmtpServer, twilio: TwilioFake
) -> tuple[subprocess.Popen[bytes], Path]:
    env = {
        **os.environ,
        "CAREFLOW_DATABASE_URL": database_url,
        **database_env(database_url),
        "CAREFLOW_ENV": "test",
        "CAREFLOW_JWT_SECRET": TEST_SECRET,
        "CAREFLOW_LOG_LEVEL": "DEBUG",
        "CAREFLOW_SMTP_URL": smtp.url,
        "CAREFLOW_JOB_BACKOFF_BASE_SECONDS": "0.5",
        "CAREFLOW_JOB_POLL_INTERVAL_SECONDS": "0.1",
        # The worker runs on real time: no quiet hours, so the SMS goes out whatever the hour.
        "CAREFLOW_QUIET_HOURS_START": "0",
        "CAREFLOW_QUIET_HOURS_END": "0",
        "CAREFLOW_TWILIO_BASE_URL": twilio.base_url,
        **{f"CAREFLOW_{k.upper()}": v for k, v in TWILIO.items()},
    }
    log = directory / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "careflow.cli", "worker", "--concurrency", "2"],
        env=env,
        cwd=directory,  # away from any .env in the checkout
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return proc, log
