"""The named schemas of the API document that the catalogs define, generated from them.

careflow's rule bodies, actions and event bodies are checked against catalogs
(``automations/catalog.py``, ``events/catalog.py``, the condition language), not against
pydantic models; this module writes the same catalogs out as OpenAPI 3.1 components, so a
client reads exactly what the service enforces:

- one enum per closed set (``TriggerEvent``, ``EventType``, ``ActionType``, statuses, …);
- ``Action``: a union discriminated on ``type``, one schema per action type of the catalog,
  with its fields, which are required, and their bounds;
- ``Condition``: the condition language, recursive (``conditions/schema.py``);
- ``AutomationRuleCreate`` / ``AutomationRuleUpdate``: one variant per trigger family, so a
  ``trigger_config`` is described together with the trigger it belongs to;
- ``EventCreate``: ``POST /v1/events`` bodies discriminated on ``type``, each naming the
  entities it requires and the fields careflow reads from them (extra fields allowed;
  ``contract/events.py``).

Models and routes point at these by name (``kit.schemas.component``); ``kit.openapi`` adds
them to the document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careflow.audit.service import SYSTEM_ROLE
from careflow.auth import Role
from careflow.automations.catalog import (
    ACTIONS,
    INT_MAX,
    INT_MIN,
    MAX_ACTIONS,
    TRIGGERS,
    TRIGGERS_BY_EVENT,
)
from careflow.automations.schemas import NAME_MAX
from careflow.conditions.schema import condition_schemas
from careflow.contract.events import ID, entity_schemas, event_schemas
from careflow.contract.names import Schema, camel
from careflow.entities.catalog import ENTITY_TYPES
from careflow.events.catalog import EVENT_TYPES
from careflow.examples import FIRST_VIDEO, GDPR_WELCOME, PRE_APPOINTMENT_REMINDER
from careflow.executions.schemas import ACTION_RESULT_STATUSES
from careflow.kit.schemas import NOT_BLANK_PATTERN, component
from careflow.messages.statuses import MESSAGE_STATUSES
from careflow.pathways.catalog import CREATION_MODES, INBOX_VISIBILITIES, NEXT_ACTORS, PRIORITIES
from careflow.templates.schemas import KEY_PATTERN

ENUMS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "TriggerEvent": (tuple(t["event"] for t in TRIGGERS), "An automation trigger"),
    "EventType": (tuple(EVENT_TYPES), "A domain event type (also a pathway trigger type)"),
    "EntityType": (ENTITY_TYPES, "An entity careflow keeps snapshots of"),
    "ActionType": (tuple(a["type"] for a in ACTIONS), "An automation action type"),
    "ExecutionStatus": (
        ("running", "success", "partial_failure", "failure", "skipped"),
        "`running` while an action is still to come",
    ),
    "ActionResultStatus": (
        ACTION_RESULT_STATUSES,
        "An action's result in its execution: `success`, `failure`, `skipped`; `deferred` "
        "while it waits for its time (SMS quiet hours, the hourly cap), `throttled` while a "
        "rate limit holds it back (the organisation's, a provider's, or the provider's own "
        "answer): it waits, uses no attempt, and never fails for that",
    ),
    "EventStatus": (("accepted", "processed"), "`processed` once dispatched by the worker"),
    "FormStatus": (("pending", "completed"), "A form instance's status"),
    "EpisodeStatus": (("open", "closed"), "An episode's status"),
    "MessageChannel": (("email", "sms"), "A delivery channel"),
    "MessageStatus": (
        MESSAGE_STATUSES,
        "A message's delivery status: `queued` (handed to the provider), `sent`, `delivered`,"
        " `undelivered`, `failed`; `retrying` while careflow tries again",
    ),
    "JobStatus": (("queued", "running", "dead"), "A job's status"),
    "ActorRole": (
        (*(r.value for r in Role), SYSTEM_ROLE),
        "Who made a change: the role of the token (`admin`, `specialist`, `patient`, "
        "`support`, `service`), or `system` for careflow's own work",
    ),
    "Priority": (PRIORITIES, "An episode's (suggested) priority"),
    "CreationMode": (CREATION_MODES, "Whether an event creates, reuses or suppresses an episode"),
    "InboxVisibility": (INBOX_VISIBILITIES, "Whether the episode shows in the practice inbox"),
    "ExpectedNextActor": (NEXT_ACTORS, "Who acts next on the episode"),
}


def _enum_schemas() -> dict[str, Schema]:
    return {
        name: {"title": name, "type": "string", "enum": list(values), "description": doc}
        for name, (values, doc) in ENUMS.items()
    }


# --- actions ------------------------------------------------------------------------------

_JSON_TYPES = {"integer": "integer", "boolean": "boolean", "string": "string"}
# A template key as PUT /v1/templates accepts it (ECMAScript regex: no trailing newline).
_TEMPLATE_FIELDS = {"send_email", "send_sms"}


def action_schema_name(action_type: str) -> str:
    """``send_email`` → ``SendEmailAction``."""
    return f"{camel(action_type)}Action"


def _field_schema(spec: Mapping[str, Any]) -> Schema:
    out: Schema = {"type": _JSON_TYPES[spec["type"]]}
    if "description" in spec:
        out["description"] = spec["description"]
    if "enum" in spec:
        out["enum"] = list(spec["enum"])
    if spec["type"] == "integer":
        out["minimum"] = spec.get("min", INT_MIN)
        out["maximum"] = spec.get("max", INT_MAX)
    if "default" in spec:
        out["default"] = spec["default"]
    return out


_ACTION_EXAMPLES: dict[str, Schema] = {
    "require_form": GDPR_WELCOME["actions"][0],
    "send_email": GDPR_WELCOME["actions"][2],
    "send_sms": PRE_APPOINTMENT_REMINDER["actions"][0],
    "update_segment": {"type": "update_segment", "segment_id": 7, "action": "add"},
}


def _action_schemas() -> dict[str, Schema]:
    schemas: dict[str, Schema] = {}
    mapping: dict[str, str] = {}
    for entry in ACTIONS:
        kind = entry["type"]
        name = action_schema_name(kind)
        properties: Schema = {"type": {"type": "string", "const": kind}}
        required = ["type"]
        for field, spec in entry["config_schema"].items():
            properties[field] = _field_schema(spec)
            if spec.get("required"):
                required.append(field)
        if kind in _TEMPLATE_FIELDS:
            properties["template"]["pattern"] = KEY_PATTERN
        schemas[name] = {
            "title": name,
            "type": "object",
            "description": entry["description"],
            "properties": properties,
            "required": required,
            "additionalProperties": False,
            "examples": [_ACTION_EXAMPLES[kind]],
        }
        mapping[kind] = f"#/components/schemas/{name}"
    schemas["Action"] = {
        "title": "Action",
        "description": "One step of a rule, by `type` (`GET /v1/automations/actions`)",
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    return schemas


# --- automation rule bodies ---------------------------------------------------------------

_RULE_DESCRIPTIONS = {
    "name": "The rule's name",
    "description": "What the rule is for",
    "enabled": "Whether the rule runs (default true)",
    "conditions": "Which trigger occurrences the rule runs for (`{}`: all)",
    "actions": f"The actions, run in order (1 to {MAX_ACTIONS})",
}


def _rule_fields() -> Schema:
    return {
        "name": {
            "type": "string",
            "minLength": 1,
            "maxLength": NAME_MAX,
            "pattern": NOT_BLANK_PATTERN,
            "description": _RULE_DESCRIPTIONS["name"],
        },
        "description": {
            "type": ["string", "null"],
            "description": _RULE_DESCRIPTIONS["description"],
        },
        "enabled": {
            "type": "boolean",
            "default": True,
            "description": _RULE_DESCRIPTIONS["enabled"],
        },
        "conditions": {
            "anyOf": [component("Condition"), {"type": "null"}],
            "description": _RULE_DESCRIPTIONS["conditions"] + "; null is `{}`",
        },
        "actions": {
            "type": "array",
            "items": component("Action"),
            "minItems": 1,
            "maxItems": MAX_ACTIONS,
            "description": _RULE_DESCRIPTIONS["actions"],
        },
    }


def _trigger_config_schema(event: str) -> Schema:
    spec = TRIGGERS_BY_EVENT[event]["config_schema"] or {}
    return {
        "type": ["object", "null"],
        "properties": {name: _field_schema(field) for name, field in spec.items()},
        "additionalProperties": False,
        "description": "The trigger's settings; defaults filled in when absent"
        if spec
        else "This trigger takes no settings: `{}` or null",
    }


def _trigger_variants() -> list[tuple[str, list[str], Schema]]:
    """(variant name, trigger events, trigger_config schema): one variant per config shape."""
    plain = [t["event"] for t in TRIGGERS if not t["config_schema"]]
    variants = [("Plain", plain, _trigger_config_schema(plain[0]))]
    for trigger in TRIGGERS:
        if trigger["config_schema"]:
            event = trigger["event"]
            variants.append((camel(event.split(".", 1)[1]), [event], _trigger_config_schema(event)))
    return variants


def _trigger_event_schema(events: list[str]) -> Schema:
    description = "The trigger (`GET /v1/automations/triggers`)"
    if len(events) == 1:
        return {"type": "string", "const": events[0], "description": description}
    return {"type": "string", "enum": events, "description": description}


def _rule_body_schemas() -> dict[str, Schema]:
    schemas: dict[str, Schema] = {}
    create_refs, update_refs = [], []
    for variant, events, config in _trigger_variants():
        name = f"AutomationRuleCreate{variant}"
        schemas[name] = {
            "title": name,
            "type": "object",
            "description": f"A rule on {', '.join(f'`{e}`' for e in events)}",
            "properties": {
                **_rule_fields(),
                "trigger_event": _trigger_event_schema(events),
                "trigger_config": config,
            },
            "required": ["name", "trigger_event", "actions"],
            "additionalProperties": False,
        }
        create_refs.append(component(name))
        update = f"AutomationRuleUpdate{variant}"
        schemas[update] = {
            "title": update,
            "type": "object",
            "description": f"Moves the rule to, or changes its settings on, "
            f"{', '.join(f'`{e}`' for e in events)}; the other fields as in any update",
            "properties": {
                **_rule_fields(),
                "trigger_event": _trigger_event_schema(events),
                "trigger_config": config,
            },
            "required": ["trigger_event"],
            "additionalProperties": False,
        }
        update_refs.append(component(update))
    schemas["AutomationRuleUpdateFields"] = {
        "title": "AutomationRuleUpdateFields",
        "type": "object",
        "description": "Changes fields other than the trigger",
        "properties": _rule_fields(),
        "additionalProperties": False,
    }
    schemas["AutomationRuleCreate"] = {
        "title": "AutomationRuleCreate",
        "description": "A new automation rule; `trigger_config` as its trigger defines it",
        "oneOf": create_refs,
        "examples": [FIRST_VIDEO, GDPR_WELCOME, PRE_APPOINTMENT_REMINDER],
    }
    schemas["AutomationRuleUpdate"] = {
        "title": "AutomationRuleUpdate",
        "description": "Only the fields sent change. A `trigger_config` is sent with its "
        "`trigger_event`; a new `trigger_event` without one starts from its defaults.",
        "anyOf": [component("AutomationRuleUpdateFields"), *update_refs],
        "examples": [
            {"enabled": False},
            {
                "name": "Updated Rule Name",
                "actions": [{"type": "send_email", "template": "welcome_patient"}],
            },
        ],
    }
    return schemas


def components() -> dict[str, Schema]:
    """Every component this module defines, by name."""
    return {
        "EntityId": {"title": "EntityId", **ID, "examples": [100, "pat_8c1f"]},
        **_enum_schemas(),
        **condition_schemas(),
        **_action_schemas(),
        **_rule_body_schemas(),
        **entity_schemas(),
        **event_schemas(),
    }
