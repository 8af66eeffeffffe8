"""The trigger and action catalogs, and the one validator over their ``config_schema`` format.

The catalogs are what ``GET /v1/automations/triggers`` and ``/actions`` publish, and they are
also the only description of a valid ``trigger_config`` or action: rules are checked against
the very schemas a client reads, so the two cannot drift apart.

A ``config_schema`` maps a field name to a spec: ``type`` (integer, boolean, string),
``required``, ``description``, ``default``, ``enum``, ``min``, ``max``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from careflow.templates.schemas import KEY_PATTERN

FieldSpec = Mapping[str, Any]
ConfigSchema = Mapping[str, FieldSpec]
ErrorList = list[dict[str, str]]

# Every integer a config holds ends up in a 32-bit column (form templates, segments) or in a
# delay added to a timestamp; a bound here turns a would-be overflow into a 400.
INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
# A rule is a short recipe, not a batch: more actions than this is a mistake, and each one is
# a job and a history row per execution.
MAX_ACTIONS = 20
# 30 days: a delayed message later than that belongs to a time-based trigger instead.
MAX_DELAY_MINUTES = 43_200

TRIGGERS: tuple[dict[str, Any], ...] = (
    {
        "event": "patient.onboarded",
        "category": "patient_lifecycle",
        "description": "New patient registered in the system",
        "entity_type": "patient",
        "config_schema": None,
    },
    {
        "event": "patient.first_login",
        "category": "patient_lifecycle",
        "description": "Patient logs in for the first time",
        "entity_type": "patient",
        "config_schema": None,
    },
    {
        "event": "appointment.booked",
        "category": "appointment_lifecycle",
        "description": "Appointment booked for a patient",
        "entity_type": "appointment",
        "config_schema": None,
    },
    {
        "event": "appointment.first_booked",
        "category": "appointment_lifecycle",
        "description": "Patient books their first appointment",
        "entity_type": "appointment",
        "config_schema": None,
    },
    {
        "event": "appointment.rescheduled",
        "category": "appointment_lifecycle",
        "description": "Appointment moved to a new time",
        "entity_type": "appointment",
        "config_schema": None,
    },
    {
        "event": "appointment.cancelled",
        "category": "appointment_lifecycle",
        "description": "Appointment cancelled",
        "entity_type": "appointment",
        "config_schema": None,
    },
    {
        "event": "appointment.completed",
        "category": "appointment_lifecycle",
        "description": "Appointment marked as completed",
        "entity_type": "appointment",
        "config_schema": None,
    },
    {
        "event": "appointment.before_start",
        "category": "appointment_lifecycle",
        "description": "Fires X hours/days before appointment starts",
        "entity_type": "appointment",
        "config_schema": {
            "hours_before": {
                "type": "integer",
                "description": "Hours before appointment to trigger",
                "default": 24,
                "min": 1,
                "max": 168,
            }
        },
    },
    {
        "event": "appointment.after_end",
        "category": "appointment_lifecycle",
        "description": "Fires X hours after appointment ends",
        "entity_type": "appointment",
        "config_schema": {
            "hours_after": {
                "type": "integer",
                "description": "Hours after appointment ends to trigger",
                "default": 24,
                "min": 1,
                "max": 168,
            }
        },
    },
    {
        "event": "form.completed",
        "category": "form_lifecycle",
        "description": "Patient completes a form",
        "entity_type": "form",
        "config_schema": None,
    },
    {
        "event": "invoice.overdue",
        "category": "billing",
        "description": "Invoice is past its due date and unpaid",
        "entity_type": "invoice",
        "config_schema": None,
    },
)

ACTIONS: tuple[dict[str, Any], ...] = (
    {
        "type": "require_form",
        "category": "data_collection",
        "description": "Create form instance and block access until signed",
        "config_schema": {
            "form_template_id": {
                "type": "integer",
                "required": True,
                "description": "Form template to instantiate",
            },
            "blocking": {
                "type": "boolean",
                "required": True,
                "description": "Block booking/access until form signed",
            },
            "description": {
                "type": "string",
                "required": False,
                "description": "Human-readable description",
            },
        },
    },
    {
        "type": "send_email",
        "category": "communication",
        "description": "Send transactional email to patient",
        "config_schema": {
            "template": {
                "type": "string",
                "required": True,
                "description": "Email template ID",
            },
            "delay_minutes": {
                "type": "integer",
                "required": False,
                "description": "Delay before sending (minutes)",
                "default": 0,
                "min": 0,
                "max": MAX_DELAY_MINUTES,
            },
        },
    },
    {
        "type": "send_sms",
        "category": "communication",
        "description": "Send transactional SMS to patient",
        "config_schema": {
            "template": {
                "type": "string",
                "required": True,
                "description": "SMS template ID",
            },
            "delay_minutes": {
                "type": "integer",
                "required": False,
                "description": "Delay before sending (minutes)",
                "default": 0,
                "min": 0,
                "max": MAX_DELAY_MINUTES,
            },
        },
    },
    {
        "type": "update_segment",
        "category": "data_management",
        "description": "Add or remove patient from segment",
        "config_schema": {
            "segment_id": {
                "type": "integer",
                "required": True,
                "description": "Segment to update",
            },
            "action": {
                "type": "string",
                "required": True,
                "enum": ["add", "remove"],
                "description": "Add or remove from segment",
            },
        },
    },
)

TRIGGERS_BY_EVENT: Mapping[str, Mapping[str, Any]] = {t["event"]: t for t in TRIGGERS}
ACTIONS_BY_TYPE: Mapping[str, Mapping[str, Any]] = {a["type"]: a for a in ACTIONS}

# What a template key can be (templates/schemas.KEY_PATTERN; it has no trailing newline).
_TEMPLATE_KEY = re.compile(KEY_PATTERN.removesuffix("$") + r"\Z")
TEMPLATE_KEY_MESSAGE = (
    "not a template key: a letter or digit, then letters, digits, '_', '.' or '-',"
    " 100 characters at most"
)

# Which delivery channel a messaging action's `template` is looked up in.
TEMPLATE_CHANNELS: Mapping[str, str] = {"send_email": "email", "send_sms": "sms"}


def trigger_catalog() -> list[dict[str, Any]]:
    """The published trigger catalog (a copy: callers may not mutate the source)."""
    return copy.deepcopy(list(TRIGGERS))


def action_catalog() -> list[dict[str, Any]]:
    return copy.deepcopy(list(ACTIONS))


def _type_error(spec: FieldSpec, value: Any) -> str | None:
    kind = spec.get("type")
    # JSON true is not 1: a boolean never passes as an integer.
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if not INT_MIN <= value <= INT_MAX:
            return f"must be between {INT_MIN} and {INT_MAX}"
    elif kind == "boolean":
        if not isinstance(value, bool):
            return "must be a boolean"
    elif kind == "string":
        if not isinstance(value, str):
            return "must be a string"
    else:  # pragma: no cover - a catalog typo, caught by the catalog tests
        raise ValueError(f"unsupported config_schema type {kind!r}")
    return None


def _value_errors(spec: FieldSpec, value: Any) -> str | None:
    if (problem := _type_error(spec, value)) is not None:
        return problem
    if "enum" in spec and value not in spec["enum"]:
        return f"must be one of: {', '.join(str(v) for v in spec['enum'])}"
    if "min" in spec and value < spec["min"]:
        return f"must be at least {spec['min']}"
    if "max" in spec and value > spec["max"]:
        return f"must be at most {spec['max']}"
    return None


def validate_config(
    config: Any,
    schema: ConfigSchema | None,
    *,
    where: str,
    ignore: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], ErrorList]:
    """Check ``config`` against ``schema``; return it with defaults filled, and every problem.

    A ``None`` schema admits only ``{}``. Keys in ``ignore`` (an action's ``type``) are
    neither checked nor refused. Error fields are ``<where>.<name>``.
    """
    if not isinstance(config, Mapping):
        return {}, [{"field": where, "message": "must be an object"}]
    schema = schema or {}
    errors: ErrorList = []
    filled: dict[str, Any] = {}
    for name, value in config.items():
        if name in ignore:
            filled[name] = value
            continue
        spec = schema.get(name)
        if spec is None:
            allowed = ", ".join(sorted(schema)) or "none"
            errors.append(
                {"field": f"{where}.{name}", "message": f"unknown field; allowed: {allowed}"}
            )
            continue
        if (problem := _value_errors(spec, value)) is not None:
            errors.append({"field": f"{where}.{name}", "message": problem})
            continue
        filled[name] = value
    for name, spec in schema.items():
        if name in config:
            continue
        if spec.get("required"):
            errors.append({"field": f"{where}.{name}", "message": "is required"})
        elif "default" in spec:
            filled[name] = copy.deepcopy(spec["default"])
    return filled, errors


def validate_trigger(event: Any, config: Any) -> tuple[dict[str, Any], ErrorList]:
    """A trigger event and its config: the config with defaults filled, and every problem."""
    trigger = TRIGGERS_BY_EVENT.get(event) if isinstance(event, str) else None
    if trigger is None:
        known = ", ".join(TRIGGERS_BY_EVENT)
        return {}, [{"field": "trigger_event", "message": f"unknown trigger; one of: {known}"}]
    return validate_config(
        {} if config is None else config, trigger["config_schema"], where="trigger_config"
    )


def validate_action(action: Any, where: str) -> ErrorList:
    """One action object: its ``type`` and the fields its type's schema allows."""
    if not isinstance(action, Mapping):
        return [{"field": where, "message": "must be an object"}]
    kind = action.get("type")
    if kind is None:
        return [{"field": f"{where}.type", "message": "is required"}]
    entry = ACTIONS_BY_TYPE.get(kind) if isinstance(kind, str) else None
    if entry is None:
        known = ", ".join(ACTIONS_BY_TYPE)
        return [{"field": f"{where}.type", "message": f"unknown action type; one of: {known}"}]
    _, errors = validate_config(
        action, entry["config_schema"], where=where, ignore=frozenset({"type"})
    )
    template = action.get("template")
    if (
        kind in TEMPLATE_CHANNELS
        and isinstance(template, str)
        and not _TEMPLATE_KEY.match(template)
    ):
        # No template can have such a key (PUT /v1/templates refuses it), on create or on
        # update, where an unknown key is otherwise allowed.
        errors.append({"field": f"{where}.template", "message": TEMPLATE_KEY_MESSAGE})
    return errors


def validate_actions(actions: Any) -> ErrorList:
    if not isinstance(actions, list):
        return [{"field": "actions", "message": "must be a list of actions"}]
    if not actions:
        return [{"field": "actions", "message": "at least one action is required"}]
    if len(actions) > MAX_ACTIONS:
        return [{"field": "actions", "message": f"at most {MAX_ACTIONS} actions"}]
    errors: ErrorList = []
    for i, action in enumerate(actions):
        errors.extend(validate_action(action, f"actions[{i}]"))
    return errors
