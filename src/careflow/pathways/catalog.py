"""The trigger types pathway rules can target, their default base configs and named fields.

Default base configs (what an organisation gets until it PUTs its own):

| trigger                  | mode       | inbox   | journey          | assignment   | priority | next     |
|--------------------------|------------|---------|------------------|--------------|----------|----------|
| patient.onboarded        | reuse_open | visible | onboarding       | care_team    | medium   | practice |
| patient.logged_in        | suppress   | hidden  | portal           | care_team    | low      | patient  |
| patient.updated          | suppress   | hidden  | patient_records  | front_desk   | low      | practice |
| patient.first_login      | reuse_open | hidden  | onboarding       | care_team    | low      | patient  |
| appointment.booked       | reuse_open | visible | appointments     | front_desk   | medium   | practice |
| appointment.first_booked | reuse_open | visible | appointments     | front_desk   | high     | practice |
| appointment.rescheduled  | reuse_open | visible | appointments     | front_desk   | medium   | practice |
| appointment.cancelled    | reuse_open | visible | appointments     | front_desk   | high     | practice |
| appointment.completed    | reuse_open | visible | appointments     | care_team    | low      | practice |
| invoice.created          | reuse_open | hidden  | billing          | billing_team | low      | patient  |
| invoice.overdue          | reuse_open | visible | billing          | billing_team | high     | practice |
| invoice.paid             | reuse_open | hidden  | billing          | billing_team | low      | practice |
| message.received         | create_new | visible | messages         | front_desk   | medium   | practice |
| form.completed           | reuse_open | visible | forms            | care_team    | medium   | practice |

The reasoning: one inbox thread per patient and journey (``reuse_open``) keeps the inbox
readable; only a patient's message is a conversation of its own (``create_new``); portal
logins and profile edits are noise (``suppress``); what needs the practice to act (a
cancellation to refill, an overdue invoice, a first booking) starts ``high``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypedDict

CreationMode = Literal["create_new", "reuse_open", "suppress"]
InboxVisibility = Literal["visible", "hidden"]
Priority = Literal["low", "medium", "high", "urgent"]
NextActor = Literal["practice", "patient"]

CREATION_MODES: tuple[str, ...] = ("create_new", "reuse_open", "suppress")
INBOX_VISIBILITIES: tuple[str, ...] = ("visible", "hidden")
PRIORITIES: tuple[str, ...] = ("low", "medium", "high", "urgent")
NEXT_ACTORS: tuple[str, ...] = ("practice", "patient")
JOURNEY_TYPE_PATTERN = r"^[a-z][a-z0-9_-]{0,63}$"

# The six routing fields, in the order every config and rule lists them.
CONFIG_FIELDS: tuple[str, ...] = (
    "creation_mode",
    "inbox_visibility",
    "journey_type",
    "suggested_assignment",
    "suggested_priority",
    "expected_next_actor",
)


class BaseConfig(TypedDict):
    creation_mode: str
    inbox_visibility: str
    journey_type: str
    suggested_assignment: str
    suggested_priority: str
    expected_next_actor: str


@dataclass(frozen=True, slots=True)
class ConditionField:
    name: str
    type: str
    maps_to: str
    description: str


@dataclass(frozen=True, slots=True)
class TriggerType:
    trigger_type: str
    entity_type: str
    description: str
    default_config: BaseConfig
    condition_fields: tuple[ConditionField, ...]

    @property
    def named_fields(self) -> dict[str, str]:
        """The aliases ``compile_condition(named_fields=...)`` understands for this trigger."""
        return {f.name: f.maps_to for f in self.condition_fields}


_APPOINTMENT_FIELDS = (
    ConditionField(
        "appointment_type_ids",
        "array",
        "appointment.appointment_type_id",
        "Matches when the appointment's appointment_type_id is one of these ids",
    ),
    ConditionField(
        "practitioner_ids",
        "array",
        "appointment.practitioner_id",
        "Matches when the appointment's practitioner_id is one of these ids",
    ),
    ConditionField(
        "appointment_types",
        "array",
        "appointment.type",
        "Matches when the appointment's type (e.g. video, in_person) is one of these",
    ),
)
_INVOICE_FIELDS = (
    ConditionField(
        "invoice_types",
        "array",
        "invoice.type",
        "Matches when the invoice's type is one of these",
    ),
)
_PATIENT_FIELDS = (
    ConditionField(
        "patient_tags",
        "array",
        "patient.tags",
        "Matches when the patient has at least one of these tags",
    ),
)
_MESSAGE_FIELDS = (
    ConditionField(
        "channels",
        "array",
        "message.channel",
        "Matches when the message arrived on one of these channels (e.g. sms, email)",
    ),
)
_FORM_FIELDS = (
    ConditionField(
        "form_template_ids",
        "array",
        "form.form_template_id",
        "Matches when the completed form's template is one of these",
    ),
)

_FIELDS_BY_ENTITY: dict[str, tuple[ConditionField, ...]] = {
    "appointment": _APPOINTMENT_FIELDS,
    "invoice": _INVOICE_FIELDS,
    "patient": _PATIENT_FIELDS,
    "message": _MESSAGE_FIELDS,
    "form": _FORM_FIELDS,
}


def _config(
    creation_mode: CreationMode,
    inbox_visibility: InboxVisibility,
    journey_type: str,
    suggested_assignment: str,
    suggested_priority: Priority,
    expected_next_actor: NextActor,
) -> BaseConfig:
    return BaseConfig(
        creation_mode=creation_mode,
        inbox_visibility=inbox_visibility,
        journey_type=journey_type,
        suggested_assignment=suggested_assignment,
        suggested_priority=suggested_priority,
        expected_next_actor=expected_next_actor,
    )


def _trigger(trigger_type: str, description: str, default_config: BaseConfig) -> TriggerType:
    entity_type = trigger_type.split(".", 1)[0]
    return TriggerType(
        trigger_type=trigger_type,
        entity_type=entity_type,
        description=description,
        default_config=default_config,
        condition_fields=_FIELDS_BY_ENTITY[entity_type],
    )


_TRIGGERS = (
    _trigger(
        "patient.onboarded",
        "A patient was added to the practice",
        _config("reuse_open", "visible", "onboarding", "care_team", "medium", "practice"),
    ),
    _trigger(
        "patient.logged_in",
        "A patient logged in to the portal",
        _config("suppress", "hidden", "portal", "care_team", "low", "patient"),
    ),
    _trigger(
        "patient.updated",
        "A patient's details changed",
        _config("suppress", "hidden", "patient_records", "front_desk", "low", "practice"),
    ),
    _trigger(
        "patient.first_login",
        "A patient logged in for the first time (derived, at most once per patient)",
        _config("reuse_open", "hidden", "onboarding", "care_team", "low", "patient"),
    ),
    _trigger(
        "appointment.booked",
        "An appointment was booked",
        _config("reuse_open", "visible", "appointments", "front_desk", "medium", "practice"),
    ),
    _trigger(
        "appointment.first_booked",
        "A patient booked their first appointment (derived, at most once per patient)",
        _config("reuse_open", "visible", "appointments", "front_desk", "high", "practice"),
    ),
    _trigger(
        "appointment.rescheduled",
        "An appointment moved to another time",
        _config("reuse_open", "visible", "appointments", "front_desk", "medium", "practice"),
    ),
    _trigger(
        "appointment.cancelled",
        "An appointment was cancelled",
        _config("reuse_open", "visible", "appointments", "front_desk", "high", "practice"),
    ),
    _trigger(
        "appointment.completed",
        "An appointment took place",
        _config("reuse_open", "visible", "appointments", "care_team", "low", "practice"),
    ),
    _trigger(
        "invoice.created",
        "An invoice was issued",
        _config("reuse_open", "hidden", "billing", "billing_team", "low", "patient"),
    ),
    _trigger(
        "invoice.overdue",
        "An invoice passed its due date unpaid",
        _config("reuse_open", "visible", "billing", "billing_team", "high", "practice"),
    ),
    _trigger(
        "invoice.paid",
        "An invoice was paid",
        _config("reuse_open", "hidden", "billing", "billing_team", "low", "practice"),
    ),
    _trigger(
        "message.received",
        "A patient sent the practice a message",
        _config("create_new", "visible", "messages", "front_desk", "medium", "practice"),
    ),
    _trigger(
        "form.completed",
        "A patient completed a form",
        _config("reuse_open", "visible", "forms", "care_team", "medium", "practice"),
    ),
)

TRIGGERS: dict[str, TriggerType] = {t.trigger_type: t for t in _TRIGGERS}
TRIGGER_TYPES: tuple[str, ...] = tuple(sorted(TRIGGERS))
