"""A batch of SMS steps reads careflow's own opt-outs once for the whole batch: the admins'
opt-outs of its patients and the STOPs of its phones (the host's phones read in E.164 in
the organisation's region), and skips the steps they forbid."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.executions.service import RUN_ACTION_KIND
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from careflow.patients.models import PatientOptOut, SmsOptOut
from tests.fixtures.factories import PATIENT, create_rule, onboarded, post_event

Auth = Callable[..., dict[str, str]]
STEPS = 6
RULE = {
    "name": "Text new patients",
    "trigger_event": "patient.onboarded",
    "actions": [{"type": "send_sms", "template": "welcome_patient"}],
}


async def test_a_batch_reads_opt_outs_once_and_skips_the_stopped_phone_and_the_opted_out_patient(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    engine: AsyncEngine,
) -> None:
    worker = Worker(app.state.sessionmaker, settings, clock, services=app.state.services)
    await create_rule(client, auth, RULE)
    for i in range(STEPS):
        # National format: careflow reads them in the organisation's region (GB by default).
        patient = {**PATIENT, "id": 700 + i, "phone": f"07700 9001{i:02d}"}
        await post_event(client, auth, "patient.onboarded", onboarded(patient))
    dispatches = await worker.claim(100)
    assert await worker.run_batch(dispatches) == ["done"] * STEPS
    async with create_sessionmaker(engine)() as session, session.begin():
        session.add(
            SmsOptOut(
                organization_id=1, phone="+447700900101", source="sms_stop", created_at=clock.now()
            )
        )
        session.add(
            PatientOptOut(
                organization_id=1,
                patient_id=702,
                channel="sms",
                source="admin",
                created_at=clock.now(),
            )
        )
    sends = await worker.claim(100)
    assert [job.kind for job in sends] == [RUN_ACTION_KIND] * STEPS

    statements: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        assert await worker.run_batch(sends) == ["done"] * STEPS
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)

    tables = Counter(s.split(" FROM ")[1].split()[0] for s in statements if s.startswith("SELECT"))
    assert (tables["PATIENT_OPT_OUTS"], tables["SMS_OPT_OUTS"]) == (1, 1), statements

    r = await client.get("/v1/automations/executions", params={"limit": 100}, headers=auth())
    outcomes = {}
    for execution in r.json()["data"]:
        detail = await client.get(f"/v1/automations/executions/{execution['id']}", headers=auth())
        [action] = detail.json()["data"]["actions_executed"]
        # Executions are numbered in the order the patients were onboarded.
        outcomes[699 + execution["id"]] = (action["status"], action.get("reason"))
    assert outcomes == {
        700: ("success", None),
        701: ("skipped", "phone replied STOP"),
        702: ("skipped", "patient opted out of SMS in careflow"),
        703: ("success", None),
        704: ("success", None),
        705: ("success", None),
    }
