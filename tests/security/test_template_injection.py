"""Server-side template injection through organisation templates (``PUT /v1/templates``).

Templates are written by organisation admins and rendered by careflow's workers: untrusted
code. The sandbox itself is unit-tested in tests/delivery/test_templates.py; here the
attack goes through the API: refused at save, and — if a payload ever got stored (an older
version, a restored backup) — an execution that renders it fails that one action, sends
nothing and records an error that reveals no internals.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.db import create_sessionmaker
from careflow.templates.models import Template
from tests.fixtures.smtp import SmtpServer
from tests.security.conftest import CANARIES, Auth, Drain, canary_patient

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ 'x'|attr('format') }}",
    "{{ self._TemplateReference__context }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{% endfor %}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ ''|attr('__class__')|attr('__mro__') }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{{ range.__self__ }}",
    "{{ patient.__class__ }}",
    "{{ config }}{{ request.environ }}{{ self.__dict__ }}",
    "{{ 'a' * 100000000 }}",
    "{{ 9 ** 99999999 }}",
]

# What an error must not show: Python objects, tracebacks, careflow's or Jinja's own types.
# (Quoting the attribute the author wrote, e.g. '__class__', is fine: it is their text.)
INTERNALS = (
    "<class",
    "object at 0x",
    "Traceback",
    'File "',
    "site-packages",
    "jinja2",
    "Undefined",
    "TemplateReference",
    "LoopContext",
)


class TestRefusedAtSave:
    @pytest.mark.parametrize("payload", ESCAPES)
    @pytest.mark.parametrize("part", ["subject", "body"])
    async def test_payload_is_refused(
        self, client: httpx.AsyncClient, auth: Auth, payload: str, part: str
    ) -> None:
        body = {"subject": "Hello", "body": "Hello", part: f"Hi {payload}"}
        r = await client.put("/v1/templates/email/welcome_patient", json=body, headers=auth())
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "validation_error"
        assert [d["field"] for d in error["details"]] == [part]
        # Nothing stored: the built-in still answers.
        got = await client.get("/v1/templates/email/welcome_patient", headers=auth())
        assert got.json()["data"]["built_in"] is True

    @pytest.mark.parametrize("payload", ESCAPES[:5])
    async def test_sms_payload_is_refused(
        self, client: httpx.AsyncClient, auth: Auth, payload: str
    ) -> None:
        r = await client.put(
            "/v1/templates/sms/welcome_patient", json={"body": payload}, headers=auth()
        )
        assert r.status_code == 400, r.text


async def store_directly(engine: AsyncEngine, body: str) -> None:
    """Write a template row behind the API's back, as an older version might have."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    async with create_sessionmaker(engine)() as session, session.begin():
        session.add(
            Template(
                organization_id=1,
                key="stored_payload",
                channel="email",
                subject="Welcome",
                body=body,
                created_at=now,
                updated_at=now,
            )
        )


class TestStoredPayloadFailsSafely:
    @pytest.mark.parametrize("payload", ESCAPES[:5])
    async def test_execution_records_a_failure_and_sends_nothing(
        self,
        client: httpx.AsyncClient,
        auth: Auth,
        engine: AsyncEngine,
        drain: Drain,
        smtp: SmtpServer,
        payload: str,
    ) -> None:
        await store_directly(engine, f"Hello {{{{ patient.first_name }}}} {payload}")
        rule: dict[str, Any] = {
            "name": "Welcome with a stored payload",
            "trigger_event": "patient.onboarded",
            "actions": [
                {"type": "send_email", "template": "stored_payload"},
                {"type": "update_segment", "segment_id": 1, "action": "add"},
            ],
        }
        r = await client.post("/v1/automations/rules", json=rule, headers=auth())
        assert r.status_code == 201, r.text
        event = {"type": "patient.onboarded", "data": {"patient": canary_patient()}}
        assert (
            await client.post("/v1/events", json=event, headers=auth("service"))
        ).status_code == 202
        await drain(until_settled=True)

        execution = (await client.get("/v1/automations/executions", headers=auth())).json()["data"][
            0
        ]
        detail = (
            await client.get(f"/v1/automations/executions/{execution['id']}", headers=auth())
        ).json()["data"]
        email, segment = detail["actions_executed"]
        assert email["status"] == "failure", email
        assert email["error"]
        # The failed action does not stop the next one.
        assert segment["status"] == "success"
        assert detail["status"] == "partial_failure"
        for text in (email["error"], detail.get("error_message") or ""):
            # Quoted names are the author's own text (the attribute they tried).
            unquoted = re.sub(r"'[^']*'", "''", text)
            for word in INTERNALS:
                assert word not in unquoted, (word, text)
        assert smtp.sink.messages == []
        messages = (await client.get("/v1/messages", headers=auth())).json()["data"]
        for message in messages:
            assert message["status"] != "sent"
            one = (await client.get(f"/v1/messages/{message['id']}", headers=auth())).json()
            assert one["data"]["body"] == ""
            unquoted = re.sub(r"'[^']*'", "''", json.dumps(one))
            for word in INTERNALS:
                assert word not in unquoted
            # Nothing was rendered, so not even the patient's own name is in it.
            assert CANARIES[0] not in json.dumps(one)


class TestRenderBudget:
    def test_nested_empty_loops_are_bounded(self) -> None:
        # In a child process with a deadline: in-process, a hang would hang the suite.
        source = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        code = (
            "from careflow.templates.rendering import check_source\n"
            f"print(check_source('email', 'Subject', {source!r}))\n"
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, timeout=10, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.fail("rendering a template with nested empty loops did not finish in 10 s")
        assert done.returncode == 0
        assert b"field" in done.stdout  # refused, with a detail
