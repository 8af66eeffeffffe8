"""Per-type checks of an event's ``data`` (400 ``validation_error`` naming each field)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careflow.entities.catalog import ENTITY_TYPES, PATIENT_LINK
from careflow.entities.validation import entity_id_problem, field_problems
from careflow.errors import ValidationError
from careflow.events.catalog import EVENT_TYPES, EventType

RULES_DOC = """\
Every event needs the entity it is about, by type:

| type | required |
|---|---|
| `patient.*` (incl. `patient.first_login`) | `data.patient.id` |
| `appointment.*` | `data.appointment.id` |
| `appointment.booked`, `appointment.first_booked` | also `data.appointment.patient_id` |
| `invoice.*` | `data.invoice.id` |
| `form.completed` | `data.form.id` |
| `message.received` | `data.message` (an object) |

Any `patient`, `appointment`, `invoice` or `form` object present in `data` must be an object
with an `id`; a `patient_id` on an appointment, invoice or form must be an entity id too.
Entity ids are integers or non-empty strings (at most 128 characters; booleans are refused).
The fields careflow reads must, when given and not null, be of their kind: a patient's
`email` one address (`ada@example.com`), `phone` a string, `timezone` an IANA zone
(`Europe/London`), `email_opt_out` and `sms_opt_out` true or false; an appointment's
`starts_at` and `ends_at` ISO 8601 date-times with an offset (`2025-02-20T09:00:00Z`):
reminders and follow-ups are scheduled from them. Other fields are stored as sent.
Anything else is a 400 `validation_error` whose `details` name each bad field
(e.g. `data.appointment.id`). An unknown `type` is a 400 too.
"""


def _lookup(data: Mapping[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def validate_event(event_type: str, data: Mapping[str, Any]) -> EventType:
    """The catalog entry of ``event_type``, or a ValidationError listing every problem."""
    spec = EVENT_TYPES.get(event_type)
    if spec is None:
        raise ValidationError(
            "Unknown event type",
            # The value is not echoed: a producer's bad field may hold anything, patient data
            # included, and error bodies end up in client logs.
            details=[{"field": "type", "message": "unknown event type"}],
        )
    errors: list[dict[str, str]] = []
    if spec.entity_type is not None and data.get(spec.entity_type) is None:
        errors.append({"field": f"data.{spec.entity_type}.id", "message": "is required"})
    for path in spec.required_objects:
        if not isinstance(_lookup(data, path), Mapping):
            errors.append({"field": f"data.{path}", "message": "must be an object"})
    for entity_type in ENTITY_TYPES:
        if data.get(entity_type) is None:
            continue
        entity = data[entity_type]
        if not isinstance(entity, Mapping):
            errors.append({"field": f"data.{entity_type}", "message": "must be an object"})
            continue
        problem = entity_id_problem(entity.get("id"))
        if problem:
            errors.append({"field": f"data.{entity_type}.id", "message": problem})
        errors += field_problems(entity_type, entity, f"data.{entity_type}.")
        link = PATIENT_LINK.get(entity_type)
        required_link = f"{entity_type}.{link}" in spec.required_ids
        if link and (required_link or entity.get(link) is not None):
            problem = entity_id_problem(entity.get(link))
            if problem:
                errors.append({"field": f"data.{entity_type}.{link}", "message": problem})
    message = data.get("message")
    if isinstance(message, Mapping) and message.get("patient_id") is not None:
        problem = entity_id_problem(message.get("patient_id"))
        if problem:
            errors.append({"field": "data.message.patient_id", "message": problem})
    if errors:
        # One message per field, in the order found.
        unique: dict[str, dict[str, str]] = {}
        for error in errors:
            unique.setdefault(error["field"], error)
        raise ValidationError(details=list(unique.values()))
    return spec
