"""The log lines an operator alerts on, as the process writes them (JSON on stderr): one access
line per request, failed actions and executions at warning with their reason, retries with
their reason, dead jobs at error; ids only, never what a patient wrote or is called."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from careflow.config import Settings
from careflow.jobs.queue import enqueue
from careflow.jobs.registry import JobContext, job_handler
from careflow.kit.clock import FrozenClock
from tests.fixtures.smtp import SmtpServer

Auth = Callable[..., dict[str, str]]
Drain = Callable[..., Any]

CANARY_EMAIL = "log-canary.patient@example.org"
CANARY_NAME = "Zebedee-Logcanary"


@job_handler("test.crash_with_patient_data")
async def crash_with_patient_data(ctx: JobContext, payload: dict[str, Any]) -> None:
    # A driver's or a library's message may quote the values it was handling.
    raise ValueError(f"bad value {CANARY_EMAIL!r} for {CANARY_NAME}")


def log_lines(err: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, "no log line was captured"
    return lines


def of_event(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["event"] == event]


def patient(patient_id: int = 100) -> dict[str, Any]:
    return {
        "id": patient_id,
        "first_name": CANARY_NAME,
        "last_name": "Example",
        "email": CANARY_EMAIL,
        "timezone": "Europe/London",
    }


async def create_rule(client: httpx.AsyncClient, auth: Auth, template: str) -> None:
    rule = {
        "name": "Welcome",
        "trigger_event": "patient.onboarded",
        "actions": [{"type": "send_email", "template": template}],
    }
    r = await client.post("/v1/automations/rules", json=rule, headers=auth())
    assert r.status_code == 201, r.text


async def onboard(client: httpx.AsyncClient, auth: Auth) -> None:
    event = {"type": "patient.onboarded", "data": {"patient": patient()}}
    r = await client.post("/v1/events", json=event, headers=auth("service"))
    assert r.status_code == 202, r.text


class TestAccessLog:
    async def test_one_line_per_request_with_the_route_template_and_no_query(
        self, client: httpx.AsyncClient, auth: Auth, capfd: pytest.CaptureFixture[str]
    ) -> None:
        capfd.readouterr()
        r = await client.get(
            f"/v1/automations/rules/987654?email={CANARY_EMAIL}",
            headers={**auth(), "X-Request-ID": "req-access-1"},
        )
        assert r.status_code == 404
        r = await client.get("/healthz", headers={"X-Request-ID": "req-access-2"})
        assert r.status_code == 200

        lines = of_event(log_lines(capfd.readouterr().err), "http_request")
        assert len(lines) == 2
        first, second = lines
        assert {k: first[k] for k in ("level", "method", "route", "status", "request_id")} == {
            "level": "info",
            "method": "GET",
            "route": "/v1/automations/rules/{rule_id}",
            "status": 404,
            "request_id": "req-access-1",
        }
        assert isinstance(first["duration_ms"], float | int) and first["duration_ms"] >= 0
        assert "timestamp" in first
        assert (second["route"], second["status"], second["request_id"]) == (
            "/healthz",
            200,
            "req-access-2",
        )
        assert CANARY_EMAIL not in json.dumps(lines)
        assert "987654" not in json.dumps(lines)  # the template, not the path

    async def test_a_minted_request_id_and_an_unmatched_route(
        self, client: httpx.AsyncClient, capfd: pytest.CaptureFixture[str]
    ) -> None:
        capfd.readouterr()
        r = await client.post("/no/such/path/100?phone=1", json={})
        assert r.status_code == 404
        [line] = of_event(log_lines(capfd.readouterr().err), "http_request")
        assert (line["method"], line["route"], line["status"]) == ("POST", "unmatched", 404)
        assert line["request_id"] == r.headers["X-Request-ID"]


class TestFailures:
    async def test_a_failed_action_and_its_execution_log_a_warning_with_the_reason(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        smtp: SmtpServer,
        settings: Settings,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        await create_rule(client, auth, "welcome_patient")
        await onboard(client, auth)
        smtp.sink.fail_next = settings.job_max_attempts  # every attempt: the last one fails
        capfd.readouterr()
        await drain(until_settled=True)

        lines = log_lines(capfd.readouterr().err)
        retries = of_event(lines, "jobs.retried")
        assert len(retries) == settings.job_max_attempts - 1
        assert {line["level"] for line in retries} == {"warning"}
        [action] = of_event(lines, "action_finished")
        assert action["level"] == "warning"
        assert action["status"] == "failure"
        assert action["attempt"] == settings.job_max_attempts
        # careflow's words for an SMTP temporary failure: the stage, then the server's code.
        assert action["reason"].startswith("SMTP "), action
        assert action["reason"].endswith("temporary failure (450)"), action
        assert {"execution_id", "action_index", "action_type", "org_id"} <= action.keys()
        assert action["org_id"] == 1
        [execution] = of_event(lines, "execution_finished")
        assert execution["level"] == "warning"
        assert execution["status"] == "failure"
        assert execution["reason"] == f"send_email failed: {action['reason']}"
        assert CANARY_EMAIL not in json.dumps(lines)
        assert CANARY_NAME not in json.dumps(lines)

    async def test_a_retry_says_why_and_the_success_after_it_is_info(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        drain: Drain,
        smtp: SmtpServer,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        await create_rule(client, auth, "welcome_patient")
        await onboard(client, auth)
        smtp.sink.fail_next = 1
        capfd.readouterr()
        await drain(until_settled=True)

        lines = log_lines(capfd.readouterr().err)
        [retried] = of_event(lines, "jobs.retried")
        assert retried["level"] == "warning"
        assert retried["error"] == "RetryableJobError"
        assert retried["reason"].startswith("SMTP "), retried
        assert "temporary failure (450)" in retried["reason"]
        assert retried["kind"] == "run_action"
        assert {"job_id", "attempt", "retry_in_seconds", "attempts_left"} <= retried.keys()
        [action] = of_event(lines, "action_finished")
        assert (action["level"], action["status"]) == ("info", "success")
        assert "reason" not in action
        [execution] = of_event(lines, "execution_finished")
        assert (execution["level"], execution["status"]) == ("info", "success")
        assert CANARY_EMAIL not in json.dumps(lines)

    async def test_a_dead_job_logs_an_error_with_its_reason(
        self,
        app: FastAPI,
        drain: Drain,
        clock: FrozenClock,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        async with app.state.sessionmaker() as session, session.begin():
            now = clock.now()
            await enqueue(session, "run_action", {"action_index": 0}, run_at=now, now=now)
        capfd.readouterr()
        await drain()

        [dead] = of_event(log_lines(capfd.readouterr().err), "jobs.dead")
        assert dead["level"] == "error"
        assert dead["error"] == "PermanentJobError"
        assert dead["reason"] == "malformed run_action payload: 'execution_id'"

    async def test_an_unexpected_error_is_logged_by_type_and_origin_never_its_message(
        self,
        app: FastAPI,
        drain: Drain,
        clock: FrozenClock,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        async with app.state.sessionmaker() as session, session.begin():
            now = clock.now()
            await enqueue(
                session,
                "test.crash_with_patient_data",
                {},
                run_at=now,
                now=now,
                max_attempts=2,
            )
        capfd.readouterr()
        await drain(until_settled=True)

        lines = log_lines(capfd.readouterr().err)
        [retried] = of_event(lines, "jobs.retried")
        [dead] = of_event(lines, "jobs.dead")
        assert (retried["level"], dead["level"]) == ("warning", "error")
        for line in (retried, dead):
            assert line["error"] == "ValueError"
            assert line["reason"] == "ValueError (message withheld)"
            assert line["origin"].startswith("test_logs.py:")
            assert line["origin"].endswith("in crash_with_patient_data")
        assert CANARY_EMAIL not in json.dumps(lines)
        assert CANARY_NAME not in json.dumps(lines)
