"""The API references' example rules and events, and the callers the conformance tests use.

The rules are the seed's own examples (``GDPR_RULE`` and ``VIDEO_RULE`` as the Automations API
reference shows them); the field sets are the references' object shapes. Each organisation
below holds the state of one concern, so a module's counts never depend on another's writes.
"""

from __future__ import annotations

from typing import Any

ROLES = ("admin", "specialist", "patient", "support", "service")

# The seed's world: rules, events, forms, episodes that most modules read.
WORLD = 1
# A second organisation: another tenant's objects are 404s.
OTHER = 2
# The failing mailbox and the retry of its execution.
RETRY_ORG = 3
# Writes that would change the world's lists (rules updated and deleted, a deleted pathway rule).
SCRATCH = 4
# Concurrent duplicate deliveries and idempotency keys.
CONCURRENCY_ORG = 5

CALLERS: list[tuple[int, str, str]] = [
    *[(WORLD, role, f"usr_{role}") for role in ROLES],
    (OTHER, "admin", "usr_other"),
    (RETRY_ORG, "admin", "usr_admin"),
    (RETRY_ORG, "specialist", "usr_specialist"),
    (RETRY_ORG, "service", "usr_service"),
    (SCRATCH, "admin", "usr_admin"),
    (CONCURRENCY_ORG, "admin", "usr_admin"),
    (CONCURRENCY_ORG, "service", "usr_service"),
]

FAILING_MAILBOX = "fail@example.com"


GDPR_RULE = {
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

VIDEO_RULE = {
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

RULE_FIELDS = {
    "id",
    "organization_id",
    "name",
    "description",
    "enabled",
    "trigger_event",
    "trigger_config",
    "conditions",
    "actions",
    "execution_count",
    "last_executed_at",
    "created_at",
    "updated_at",
}
EXECUTION_FIELDS = {
    "id",
    "organization_id",
    "automation_rule_id",
    "automation_rule_name",
    "trigger_event",
    "trigger_entity_type",
    "trigger_entity_id",
    "status",
    "actions_executed",
    "error_message",
    "executed_at",
}
PATHWAY_RULE_FIELDS = {
    "id",
    "trigger_type",
    "rule_name",
    "priority",
    "conditions",
    "creation_mode",
    "inbox_visibility",
    "journey_type",
    "suggested_assignment",
    "suggested_priority",
    "expected_next_actor",
    "enabled",
    "created_at",
    "updated_at",
}
CONFIG_FIELDS = (
    "creation_mode",
    "inbox_visibility",
    "journey_type",
    "suggested_assignment",
    "suggested_priority",
    "expected_next_actor",
)


def appointment_event(
    event_id: str, appt_id: Any, patient_id: Any, email_addr: str, kind: str = "video"
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "appointment.booked",
        "occurred_at": "2025-02-15T10:00:00Z",
        "data": {
            "appointment": {
                "id": appt_id,
                "patient_id": patient_id,
                "type": kind,
                "appointment_type_id": "type_vip_consultation",
                "starts_at": "2035-02-20T09:00:00Z",
                "ends_at": "2035-02-20T09:30:00Z",
            },
            "patient": {
                "id": patient_id,
                "email": email_addr,
                "phone": "+447700900123",
                "first_name": "Ada",
                "timezone": "Europe/London",
            },
        },
    }


def onboarded_event(event_id: str, patient_id: Any, email_addr: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "patient.onboarded",
        "data": {"patient": {"id": patient_id, "email": email_addr, "first_name": "Ada"}},
    }
