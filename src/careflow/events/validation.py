"""Per-type checks of an event's ``data`` (400 ``validation_error`` naming each field)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careflow.errors import ValidationError
from careflow.events.catalog import ENTITY_TYPES, EVENT_TYPES, PATIENT_LINK, EventType
from careflow.kit.clock import parse_instant
from careflow.kit.text import UNSTORABLE_MESSAGE, unstorable_path
from careflow.kit.types import EntityRef, canonical_entity_id

MAX_ID_LENGTH = 128

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
An appointment's `starts_at` and `ends_at`, when given, are ISO 8601 date-times with a time
zone (`2025-02-20T09:00:00Z`): reminders and follow-ups are scheduled from them.
Anything else is a 400 `validation_error` whose `details` name each bad field
(e.g. `data.appointment.id`). An unknown `type` is a 400 too.
"""


def entity_id_problem(value: Any) -> str | None:
    """Why ``value`` is not an entity id, or None when it is one."""
    if value is None:
        return "is required"
    if isinstance(value, bool) or not isinstance(value, int | str):
        return "must be an integer or a string"
    if isinstance(value, str) and not value.strip():
        return "must not be empty"
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters"
    if isinstance(value, int) and abs(value) >= 2**63:
        return "is out of range"
    return None


# Fields careflow computes with, per entity type: each, when present and not null, must be an
# ISO 8601 date-time with a time zone, or the time-based triggers would silently never fire.
INSTANT_FIELDS = {"appointment": ("starts_at", "ends_at")}
INSTANT_MESSAGE = "must be an ISO 8601 date-time with a time zone, e.g. 2025-02-20T09:00:00Z"


def instant_problems(
    entity_type: str, entity: Mapping[str, Any], prefix: str
) -> list[dict[str, str]]:
    """The entity's time fields that are not instants (``INSTANT_FIELDS``), as details."""
    return [
        {"field": f"{prefix}{name}", "message": INSTANT_MESSAGE}
        for name in INSTANT_FIELDS.get(entity_type, ())
        if entity.get(name) is not None and parse_instant(entity.get(name)) is None
    ]


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
        errors += instant_problems(entity_type, entity, f"data.{entity_type}.")
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


def validate_entity_body(entity_type: str, path_id: EntityRef, body: Any) -> dict[str, Any]:
    """A ``PUT /v1/entities`` body: an object whose ``id``, if given, is the path's id."""
    if entity_type not in ENTITY_TYPES:
        raise ValidationError(
            details=[
                {
                    "field": "entity_type",
                    "message": f"must be one of {', '.join(ENTITY_TYPES)}",
                }
            ]
        )
    if not isinstance(body, Mapping):
        raise ValidationError(details=[{"field": "body", "message": "must be a JSON object"}])
    bad = unstorable_path(body)
    if bad is not None:
        message = f"{UNSTORABLE_MESSAGE} (at {bad or 'body'})"
        raise ValidationError(details=[{"field": "body", "message": message}])
    errors: list[dict[str, str]] = []
    if "id" in body:
        problem = entity_id_problem(body["id"])
        if problem:
            errors.append({"field": "id", "message": problem})
        elif canonical_entity_id(body["id"]) != path_id:
            errors.append({"field": "id", "message": "must equal the id in the path"})
    link = PATIENT_LINK.get(entity_type)
    if link and body.get(link) is not None:
        problem = entity_id_problem(body[link])
        if problem:
            errors.append({"field": link, "message": problem})
    errors += instant_problems(entity_type, body, "")
    if errors:
        raise ValidationError(details=errors)
    stored = dict(body)
    stored.setdefault("id", path_id)
    return stored
