"""A Python client generated from the live ``/openapi.json`` works against careflow.

openapi-python-client generates the client (no warning allowed: a warning means a part of
the document it could not turn into code, such as two schemas with one name); the test then
drives the app only through that client's typed models: an automation rule, a pathway rule,
an event, and the execution and the pathway rule read back.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from careflow.examples import FIRST_VIDEO, PATIENT, VIP_BOOKINGS, without_delays
from tests.conftest import Drain

PACKAGE = "careflow_generated_client"


@pytest.fixture
def generated(tmp_path: Path, client: httpx.AsyncClient) -> Iterator[Callable[[str], ModuleType]]:
    """``generated("models")`` imports a module of the client generated into ``tmp_path``."""
    sys.path.insert(0, str(tmp_path))
    yield lambda name: importlib.import_module(f"{PACKAGE}.{name}")
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


def _generate(document: dict[str, Any], where: Path) -> str:
    spec = where / "openapi.json"
    spec.write_text(json.dumps(document))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--output-path",
            str(where / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


async def test_generated_client_round_trip(
    app: FastAPI,
    client: httpx.AsyncClient,
    auth: Callable[..., dict[str, str]],
    drain: Drain,
    tmp_path: Path,
    generated: Callable[[str], ModuleType],
) -> None:
    live = await client.get("/openapi.json")
    assert live.status_code == 200
    output = _generate(live.json(), tmp_path)
    assert "warning" not in output.lower(), output

    client_module = generated("client")
    models = generated("models")
    create_rule = generated("api.automations.create_automation_rule")
    create_pathway_rule = generated("api.pathways.create_pathway_rule")
    get_pathway_rule = generated("api.pathways.get_pathway_rule")
    ingest_event = generated("api.events.ingest_event")
    get_event = generated("api.events.get_event")
    get_execution = generated("api.executions.get_execution")

    headers = auth("admin", org=1)
    typed = client_module.AuthenticatedClient(base_url="http://careflow.test", token="unused")
    typed.set_async_httpx_client(
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://careflow.test", headers=headers
        )
    )

    rule_body = models.AutomationRuleCreatePlain.from_dict(without_delays(FIRST_VIDEO))
    assert isinstance(rule_body.actions[0], models.RequireFormAction)
    created = await create_rule.asyncio(client=typed, body=rule_body)
    assert isinstance(created, models.AutomationRuleResponse), created
    assert created.data.trigger_event == models.TriggerEvent.APPOINTMENT_FIRST_BOOKED
    assert [type(a) for a in created.data.actions] == [
        models.RequireFormAction,
        models.SendEmailAction,
    ]

    pathway = await create_pathway_rule.asyncio(
        client=typed, body=models.PathwayRuleCreate.from_dict(VIP_BOOKINGS)
    )
    assert isinstance(pathway, models.PathwayRuleResponse), pathway
    assert pathway.data.id.startswith("rule_")

    event = models.AppointmentFirstBookedEvent.from_dict(
        {
            "event_id": "evt-client-1",
            "type": "appointment.first_booked",
            "occurred_at": "2025-02-15T10:00:00Z",
            "data": {
                "appointment": {
                    "id": 50,
                    "patient_id": PATIENT["id"],
                    "type": "video",
                    "appointment_type_id": "type_vip_consultation",
                    "starts_at": "2025-02-20T09:00:00Z",
                    "ends_at": "2025-02-20T09:30:00Z",
                },
                "patient": PATIENT,
            },
        }
    )
    accepted = await ingest_event.asyncio_detailed(client=typed, body=event)
    assert accepted.status_code == 202, accepted.content
    assert isinstance(accepted.parsed, models.EventAcceptedResponse)
    event_pk = accepted.parsed.data.id
    await drain(until_settled=True)

    read = await get_event.asyncio(id=str(event_pk), client=typed)
    assert isinstance(read, models.EventResponse), read
    assert read.data.status == models.EventStatus.PROCESSED
    assert len(read.data.executions) == 1
    execution = await get_execution.asyncio(id=str(read.data.executions[0].id), client=typed)
    assert isinstance(execution, models.ExecutionResponse), execution
    assert execution.data.status == models.ExecutionStatus.SUCCESS
    assert execution.data.automation_rule_id == created.data.id

    again = await get_pathway_rule.asyncio(rule_id=pathway.data.id, client=typed)
    assert isinstance(again, models.PathwayRuleResponse), again
    assert again.data.suggested_priority == models.Priority.URGENT
    assert again.data.conditions is not None
    assert again.data.conditions.to_dict() == VIP_BOOKINGS["conditions"]
