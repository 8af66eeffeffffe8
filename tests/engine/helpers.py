"""Plain helpers for engine tests: rule bodies, event posting, row counting."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow import examples
from careflow.db import create_sessionmaker

RULES = "/v1/automations/rules"
EVENTS = "/v1/events"
EXECUTIONS = "/v1/automations/executions"

# The rules of the Automations API reference (seed 000); the welcome email without its
# delay, so a test sees it after one drain.
GDPR_WELCOME: dict[str, Any] = examples.without_delays(examples.GDPR_WELCOME)
FIRST_VIDEO: dict[str, Any] = examples.FIRST_VIDEO
PATIENT: dict[str, Any] = examples.PATIENT
# The end-to-end benchmark's rule (bench/benchkit/workload.py): the dispatch opens the
# consent form itself, and a queued step sends the welcome email.
E2E_RULE: dict[str, Any] = {
    "name": "Welcome new patients",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [
        {"type": "require_form", "form_template_id": 10, "blocking": True},
        {"type": "send_email", "template": "welcome_patient"},
    ],
}


def rule(base: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    body.update(overrides)
    return body


async def create_rule(
    client: httpx.AsyncClient,
    auth: Callable[..., dict[str, str]],
    body: dict[str, Any],
    *,
    org: int = 1,
) -> dict[str, Any]:
    response = await client.post(RULES, json=body, headers=auth("admin", org=org))
    assert response.status_code == 201, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def post_event(
    client: httpx.AsyncClient,
    auth: Callable[..., dict[str, str]],
    type_: str,
    data: dict[str, Any],
    *,
    event_id: str | None = None,
    org: int = 1,
    role: str = "service",
    expect: int = 202,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "data": data, **extra}
    if event_id is not None:
        body["event_id"] = event_id
    response = await client.post(EVENTS, json=body, headers=auth(role, org=org))
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]


def onboarded(patient: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"patient": dict(patient or PATIENT)}


def booked(
    appointment_id: int | str, *, patient_id: int | str = 100, type_: str = "video"
) -> dict[str, Any]:
    return {
        "appointment": {
            "id": appointment_id,
            "patient_id": patient_id,
            "type": type_,
            "starts_at": "2025-02-20T09:00:00Z",
            "ends_at": "2025-02-20T09:30:00Z",
        }
    }


async def count(engine: AsyncEngine, model: Any, *where: Any) -> int:
    async with create_sessionmaker(engine)() as session:
        value = await session.scalar(select(func.count()).select_from(model).where(*where))
    return int(value or 0)


async def executions(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], **params: Any
) -> list[dict[str, Any]]:
    response = await client.get(EXECUTIONS, params=params, headers=auth("admin"))
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]
