"""The forms path end to end: a rule opens a blocking form, completing it fires a rule."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi import FastAPI

from careflow.config import Settings
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from tests.fixtures.smtp import SmtpServer

Auth = Callable[..., dict[str, str]]


async def drain(app: FastAPI, settings: Settings, clock: FrozenClock) -> int:
    worker = Worker(app.state.sessionmaker, settings, clock, services=app.state.services)
    return await worker.run_until_idle()


class TestFormsThroughTheEngine:
    async def test_consent_gate_then_completion_rule(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        auth: Auth,
        settings: Settings,
        clock: FrozenClock,
        smtp: SmtpServer,
    ) -> None:
        onboarding = {
            "name": "GDPR consent",
            "trigger_event": "patient.onboarded",
            "actions": [{"type": "require_form", "form_template_id": 42, "blocking": True}],
        }
        completion = {
            "name": "Welcome once consent is signed",
            "trigger_event": "form.completed",
            "conditions": {"form.form_template_id": 42},
            "actions": [
                {"type": "send_email", "template": "welcome_patient"},
                {"type": "update_segment", "segment_id": 9, "action": "add"},
            ],
        }
        for rule in (onboarding, completion):
            r = await client.post("/v1/automations/rules", json=rule, headers=auth())
            assert r.status_code == 201, r.text

        patient = {"id": 100, "first_name": "Alex", "email": "alex@example.com"}
        r = await client.post(
            "/v1/events",
            json={"event_id": "evt-1", "type": "patient.onboarded", "data": {"patient": patient}},
            headers=auth("service"),
        )
        assert r.status_code in (200, 201, 202), r.text
        await drain(app, settings, clock)

        gate = (await client.get("/v1/patients/100/gate", headers=auth("service"))).json()["data"]
        assert gate["blocked"] is True
        [form] = gate["pending_forms"]

        r = await client.post(f"/v1/forms/{form['id']}/complete", headers=auth("service"))
        assert r.status_code == 200, r.text
        await drain(app, settings, clock)

        gate = (await client.get("/v1/patients/100/gate", headers=auth("service"))).json()["data"]
        assert gate == {"patient_id": 100, "blocked": False, "pending_forms": []}
        assert [m.rcpt_tos for m in smtp.sink.messages] == [["alex@example.com"]]
        members = (await client.get("/v1/segments/9/members", headers=auth())).json()["data"]
        assert [m["patient_id"] for m in members] == [100]
