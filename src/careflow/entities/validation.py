"""What an entity id is, and the checks of a ``PUT /v1/entities`` body (400
``validation_error`` naming each field); event validation applies the same per entity."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from email.headerregistry import Address
from typing import Any
from zoneinfo import ZoneInfo

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
# ISO 8601 date-time with an offset, or the time-based triggers would silently never fire.
INSTANT_FIELDS = {"appointment": ("starts_at", "ends_at")}
INSTANT_MESSAGE = "must be an ISO 8601 date-time with a time zone, e.g. 2025-02-20T09:00:00Z"


# RFC 5322's dot-atom on both sides of the @: what nearly every address looks like, and always
# one address. Matched first, as the full parser costs about 0.1 ms, a fifth of an event's CPU.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*")


def _one_address(value: Any) -> bool:
    """Whether ``value`` is one email address (``ada@example.com``): no display name, no list."""
    if not isinstance(value, str):
        return False
    if _DOT_ATOM_ADDRESS.fullmatch(value):
        return True
    try:
        # The standard library's RFC 5322 parser: it refuses lists, display names, a missing
        # domain, line breaks and more, each with an exception of its own kind.
        address = Address(addr_spec=value)
    except Exception:
        return False
    return bool(address.username and address.domain)


def _known_zone(value: Any) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        ZoneInfo(value)
    except Exception:  # unknown, malformed (``../x``) or unreadable: not a zone careflow has
        return False
    return True


FieldCheck = tuple[Callable[[Any], bool], str]


def _is_string(value: Any) -> bool:
    return isinstance(value, str)


def _is_boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _is_instant(value: Any) -> bool:
    return parse_instant(value) is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)  # JSON true is not 1


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_STRING: FieldCheck = (_is_string, "must be a string")


# The fields careflow reads, per entity type, and what each must be when present and not null.
# A value of another kind would not fail loudly later: the email would be "no email address",
# the zone UTC, the opt-out ignored, the reminder never scheduled. The messages name the field
# and what it must be, never the value (a producer's bad field may hold patient data).
# The API document describes the same fields (``careflow.contract``).
READ_FIELDS: dict[str, dict[str, FieldCheck]] = {
    "patient": {
        "email": (_one_address, "must be one email address, e.g. ada@example.com"),
        "phone": _STRING,
        "first_name": _STRING,
        "timezone": (_known_zone, "must be an IANA time zone, e.g. Europe/London"),
        "email_opt_out": (_is_boolean, "must be true or false"),
        "sms_opt_out": (_is_boolean, "must be true or false"),
    },
    "appointment": {
        **{name: (_is_instant, INSTANT_MESSAGE) for name in INSTANT_FIELDS["appointment"]},
        "type": _STRING,
        "status": _STRING,
    },
    "invoice": {
        "type": _STRING,
        "status": _STRING,
        "amount": (_is_number, "must be a number"),
    },
    "form": {"form_template_id": (_is_integer, "must be an integer")},
}


def field_problems(
    entity_type: str, entity: Mapping[str, Any], prefix: str
) -> list[dict[str, str]]:
    """The entity's fields careflow reads (``READ_FIELDS``) that hold a value of the wrong
    kind, as details named ``prefix`` + the field."""
    return [
        {"field": f"{prefix}{name}", "message": message}
        for name, (valid, message) in READ_FIELDS.get(entity_type, {}).items()
        if entity.get(name) is not None and not valid(entity[name])
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
    errors += field_problems(entity_type, body, "")
    if errors:
        raise ValidationError(details=errors)
    stored = dict(body)
    stored.setdefault("id", path_id)
    return stored
