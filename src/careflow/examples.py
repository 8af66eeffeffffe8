"""The example rules of the API references, as a client sends them.

One copy, used by `careflow demo` and by the tests, so the demo shows exactly what the
references describe and the tests check exactly that.
"""

from __future__ import annotations

import copy
from typing import Any

# Seed 000, "Get Automation Rule".
GDPR_WELCOME: dict[str, Any] = {
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

# Seed 000, "Create Automation Rule".
FIRST_VIDEO: dict[str, Any] = {
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

# Seed 000's executions list names it; SPEC §4 gives its trigger.
PRE_APPOINTMENT_REMINDER: dict[str, Any] = {
    "name": "Pre-Appointment Reminder",
    "description": "Remind the patient the day before",
    "enabled": True,
    "trigger_event": "appointment.before_start",
    "trigger_config": {"hours_before": 24},
    "conditions": {},
    "actions": [
        {"type": "send_sms", "template": "appointment_reminder"},
        {"type": "send_email", "template": "appointment_reminder"},
    ],
}

# Seed 001, "The Rule Object".
VIP_BOOKINGS: dict[str, Any] = {
    "trigger_type": "appointment.booked",
    "rule_name": "VIP bookings → urgent priority",
    "priority": 0,
    "conditions": {"appointment_type_ids": ["type_vip_consultation"]},
    "suggested_assignment": "usr_team_lead",
    "suggested_priority": "urgent",
}

# SPEC §9's example patient.
PATIENT: dict[str, Any] = {
    "id": 100,
    "email": "ada@example.com",
    "phone": "+447700900123",
    "first_name": "Ada",
    "timezone": "Europe/London",
}


def without_delays(rule: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``rule`` whose actions all run at once (tests that do not move time)."""
    body = copy.deepcopy(rule)
    for action in body["actions"]:
        action.pop("delay_minutes", None)
    return body
