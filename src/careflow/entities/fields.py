"""The fields careflow itself reads from each entity, and the JSON types they must have.

Everything else in an entity is the host platform's and is kept as sent. These fields drive
delivery (a patient's email, phone, time zone and opt-outs), routing (an appointment's or
invoice's type) and conditions; a value of another type would silently change what careflow
does (an email action skipped for "no email address"), so it is refused at ingestion with a
400 naming the field. The API document describes the same fields (``careflow.contract``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# JSON type names, as JSON Schema spells them; null is always allowed (the field is unset).
READ_FIELDS: Mapping[str, Mapping[str, str]] = {
    "patient": {
        "email": "string",
        "phone": "string",
        "first_name": "string",
        "timezone": "string",
        "email_opt_out": "boolean",
        "sms_opt_out": "boolean",
    },
    "appointment": {"type": "string", "status": "string"},
    "invoice": {"type": "string", "status": "string", "amount": "number"},
    "form": {"form_template_id": "integer"},
}

_MESSAGES = {
    "string": "must be a string",
    "boolean": "must be a boolean",
    "number": "must be a number",
    "integer": "must be an integer",
}


def _has_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):  # JSON true is not 1
        return False
    if kind == "integer":
        return isinstance(value, int)
    return isinstance(value, int | float)


def read_field_problems(
    entity_type: str, entity: Mapping[str, Any], prefix: str
) -> list[dict[str, str]]:
    """The fields careflow reads that hold a value of the wrong JSON type, as details."""
    return [
        {"field": f"{prefix}{name}", "message": _MESSAGES[kind]}
        for name, kind in READ_FIELDS.get(entity_type, {}).items()
        if entity.get(name) is not None and not _has_type(entity[name], kind)
    ]
