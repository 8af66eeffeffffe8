"""What an entity id is, and the checks of a ``PUT /v1/entities`` body (400
``validation_error`` naming each field); event validation applies the same per entity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careflow.entities.catalog import ENTITY_TYPES, PATIENT_LINK
from careflow.errors import ValidationError
from careflow.kit.clock import parse_instant
from careflow.kit.text import UNSTORABLE_MESSAGE, unstorable_path
from careflow.kit.types import EntityRef, canonical_entity_id

MAX_ID_LENGTH = 128


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
