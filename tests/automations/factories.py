"""Rule bodies and a helper that creates rules through the API, as a client would."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx

RULES = "/v1/automations/rules"

# The two rules of the Automations API reference (seed 000), as a client sends them.
SEED_GDPR_WELCOME: dict[str, Any] = {
    "name": "New Patient GDPR & Welcome",
    "description": "Require GDPR consent and send welcome email to new patients",
    "enabled": True,
    "trigger_event": "patient.onboarded",
    "trigger_config": {},
    "conditions": {},
    "actions": [
        {
            "type": "require_form",
            "form_template_id": 42,
            "blocking": True,
            "description": "Privacy Policy & GDPR Consent",
        },
        {
            "type": "require_form",
            "form_template_id": 43,
            "blocking": True,
            "description": "Terms of Service",
        },
        {"type": "send_email", "template": "welcome_patient", "delay_minutes": 5},
    ],
}

SEED_FIRST_VIDEO: dict[str, Any] = {
    "name": "First Video Appointment Setup",
    "description": "Require video consent for first video appointments",
    "enabled": True,
    "trigger_event": "appointment.first_booked",
    "trigger_config": {},
    "conditions": {"appointment.type": "video"},
    "actions": [
        {
            "type": "require_form",
            "form_template_id": 50,
            "blocking": True,
            "description": "Video Recording Consent",
        },
        {"type": "send_email", "template": "first_appointment_video_guide"},
    ],
}


def rule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Welcome",
        "trigger_event": "patient.onboarded",
        "actions": [{"type": "send_email", "template": "welcome_patient"}],
    }
    body.update(copy.deepcopy(overrides))
    return body


async def create_rule(
    client: httpx.AsyncClient,
    auth: Callable[..., dict[str, str]],
    org: int = 1,
    **overrides: Any,
) -> dict[str, Any]:
    r = await client.post(RULES, json=rule_body(**overrides), headers=auth("admin", org=org))
    assert r.status_code == 201, r.text
    return r.json()["data"]  # type: ignore[no-any-return]
