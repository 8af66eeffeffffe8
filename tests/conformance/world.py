"""What the conformance fixtures build and hand the tests: the world of organisation 1.

Contract: ``World`` keeps the answer to every request that built the seed's rules and events
(by step name), so a test asserts on the answer the service gave when the world was made;
``WorkerResults`` and ``PathwayWorld`` keep what the job worker and the pathway routing did
with it. The rule bodies here are the ones the world creates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conformance.envelopes import data

# ``executions_for(rule_id, org=1)``: a rule's executions, as the list endpoint gives them.
ExecutionsFor = Callable[..., list[dict[str, Any]]]


@dataclass
class World:
    """The answers to the requests that built the world, by step name, and what came of them."""

    responses: dict[str, httpx.Response] = field(default_factory=dict)
    delayed_posted_at: float = 0.0  # time.monotonic() when the delayed rule's event was posted
    delayed_pending: dict[str, Any] = field(default_factory=dict)
    delayed_sent_early: int = 0

    def id_of(self, step: str) -> Any:
        return data(self.responses[step]).get("id")

    @property
    def rule_id(self) -> Any:
        return self.id_of("create_gdpr")

    @property
    def video_rule_id(self) -> Any:
        return self.id_of("create_video")


SEGMENT_RULE = {
    "name": "Onboarded segment",
    "trigger_event": "patient.onboarded",
    "actions": [{"type": "update_segment", "segment_id": 7, "action": "add"}],
}
REMINDER_1H_RULE = {
    "name": "1h reminder",
    "trigger_event": "appointment.before_start",
    "trigger_config": {"hours_before": 1},
    "actions": [{"type": "send_email", "template": "appointment_reminder"}],
}
DELAYED_RULE = {
    "name": "Delayed welcome",
    "trigger_event": "patient.onboarded",
    "conditions": {"patient.id": 107},
    "actions": [{"type": "send_email", "template": "welcome_patient", "delay_minutes": 1}],
}
# No trigger_config: the reference's default (hours_before 24) is filled in. Created after the
# reminder events, for an appointment an hour away: its fire time is already past.
DEFAULT_REMINDER_RULE = {
    "name": "Reminder",
    "trigger_event": "appointment.before_start",
    "actions": [{"type": "send_email", "template": "appointment_reminder"}],
}


@dataclass
class WorkerResults:
    gdpr_executions: list[dict[str, Any]]
    video_finished: bool
    mail_arrived: bool


PATHWAY_SEED_RULE = {
    "trigger_type": "appointment.booked",
    "rule_name": "VIP bookings → urgent priority",
    "priority": 0,
    "conditions": {"appointment_type_ids": ["type_vip_consultation"]},
    "suggested_assignment": "usr_team_lead",
    "suggested_priority": "urgent",
}
PATHWAY_SEED_KEY = "probe-pr-1"
PATHWAY_EXTRA_RULES = [
    {
        "trigger_type": "invoice.created",
        "rule_name": "B",
        "priority": 5,
        "creation_mode": "suppress",
        "enabled": False,
    },
    {
        "trigger_type": "appointment.booked",
        "rule_name": "C",
        "priority": 10,
        "suggested_priority": "low",
    },
    {"trigger_type": "invoice.created", "rule_name": "D", "priority": 1},
    {
        "trigger_type": "appointment.booked",
        "rule_name": "E",
        "priority": 2,
        "creation_mode": "reuse_open",
    },
]


@dataclass
class PathwayWorld:
    created: httpx.Response  # the seed's rule, created under PATHWAY_SEED_KEY
    extras: list[httpx.Response]
    vip_event: httpx.Response
    vip_processed: dict[str, Any]  # GET /v1/events/{id} of the VIP booking once processed

    @property
    def rule(self) -> dict[str, Any]:
        return dict(data(self.created))

    @property
    def rule_id(self) -> Any:
        return self.rule.get("id")
