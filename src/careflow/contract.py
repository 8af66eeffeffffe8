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
  entities it requires and the fields careflow reads from them (extra fields allowed).

Models and routes point at these by name (``kit.schemas.component``); ``kit.openapi`` adds
them to the document.
"""

from __future__ import annotations

import copy
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
from careflow.entities.catalog import ENTITY_TYPES
from careflow.entities.validation import MAX_ID_LENGTH
from careflow.events.catalog import EVENT_TYPES
from careflow.examples import FIRST_VIDEO, GDPR_WELCOME, PATIENT, PRE_APPOINTMENT_REMINDER
from careflow.kit.schemas import NOT_BLANK_PATTERN, component
from careflow.messages.statuses import MESSAGE_STATUSES
from careflow.pathways.catalog import CREATION_MODES, INBOX_VISIBILITIES, NEXT_ACTORS, PRIORITIES
from careflow.templates.schemas import KEY_PATTERN

Schema = dict[str, Any]

ENUMS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "TriggerEvent": (tuple(t["event"] for t in TRIGGERS), "An automation trigger"),
    "EventType": (tuple(EVENT_TYPES), "A domain event type (also a pathway trigger type)"),
    "EntityType": (ENTITY_TYPES, "An entity careflow keeps snapshots of"),
    "ActionType": (tuple(a["type"] for a in ACTIONS), "An automation action type"),
    "ExecutionStatus": (
        ("running", "success", "partial_failure", "failure", "skipped"),
        "`running` while an action is still to come",
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


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace(".", "_").split("_"))


def action_schema_name(action_type: str) -> str:
    """``send_email`` → ``SendEmailAction``."""
    return f"{_camel(action_type)}Action"


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
            variants.append(
                (_camel(event.split(".", 1)[1]), [event], _trigger_config_schema(event))
            )
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


# --- event bodies -------------------------------------------------------------------------

_ID: Schema = {
    "anyOf": [
        {"type": "integer", "minimum": -(2**63) + 1, "maximum": 2**63 - 1},
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_LENGTH,
            "pattern": NOT_BLANK_PATTERN,
        },
    ],
    "description": "The producer's id (integer or string), echoed back as given",
}
_INSTANT: Schema = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601 with a time zone (`2025-02-20T09:00:00Z`)",
}


def _nullable(schema: Schema, description: str) -> Schema:
    return {"anyOf": [schema, {"type": "null"}], "description": description}


def _text(description: str) -> Schema:
    return {"type": ["string", "null"], "description": description}


def _flag(description: str) -> Schema:
    return {"type": ["boolean", "null"], "description": description}


def _entity(name: str, description: str, properties: Schema, example: Schema) -> Schema:
    return {
        "title": name,
        "type": "object",
        "description": description + " Other fields are kept in the snapshot and can be used "
        "in conditions and templates.",
        "properties": {"id": _ID, **properties},
        "required": ["id"],
        "additionalProperties": True,
        "examples": [example],
    }


APPOINTMENT_EXAMPLE: Schema = {
    "id": 50,
    "patient_id": 100,
    "type": "video",
    "appointment_type_id": "type_vip_consultation",
    "starts_at": "2025-02-20T09:00:00Z",
    "ends_at": "2025-02-20T09:30:00Z",
}


def _entity_schemas() -> dict[str, Schema]:
    patient_link = {
        "anyOf": [_ID, {"type": "null"}],
        "description": "The patient it belongs to: its context gets that patient",
    }
    return {
        "Patient": _entity(
            "Patient",
            "A patient, as the host platform knows them.",
            {
                "email": _text("Where `send_email` delivers"),
                "phone": _text("Where `send_sms` delivers (E.164)"),
                "first_name": _text("Used by the built-in templates"),
                "timezone": _text("IANA zone for SMS quiet hours (default UTC)"),
                "email_opt_out": _flag("true: no email is sent to the patient"),
                "sms_opt_out": _flag("true: no SMS is sent to the patient"),
            },
            PATIENT,
        ),
        "Appointment": _entity(
            "Appointment",
            "An appointment; time-based triggers are scheduled from its times.",
            {
                "patient_id": patient_link,
                "type": _text("e.g. `video`, `in_person` (conditions: `appointment.type`)"),
                "appointment_type_id": {
                    "description": "Pathway rules' `appointment_type_ids` match it (as sent)",
                },
                "starts_at": _nullable(_INSTANT, "`appointment.before_start` fires from it"),
                "ends_at": _nullable(_INSTANT, "`appointment.after_end` fires from it"),
                "status": _text("The host's status (e.g. `booked`, `cancelled`)"),
            },
            APPOINTMENT_EXAMPLE,
        ),
        "Invoice": _entity(
            "Invoice",
            "An invoice.",
            {
                "patient_id": patient_link,
                "type": _text("Pathway rules' `invoice_types` match it"),
                "amount": {"type": ["number", "null"], "description": "For conditions"},
                "status": _text("The host's status"),
            },
            {"id": "inv_9001", "patient_id": 100, "type": "consultation", "amount": 120},
        ),
        "FormEntity": _entity(
            "FormEntity",
            "A form the host platform reports completed.",
            {
                "patient_id": patient_link,
                "form_template_id": {"type": ["integer", "null"], "description": "Its template"},
            },
            {"id": 7, "patient_id": 100, "form_template_id": 42},
        ),
        "InboundMessage": {
            "title": "InboundMessage",
            "type": "object",
            "description": "A message a patient sent (not stored as an entity).",
            "properties": {"patient_id": patient_link},
            "additionalProperties": True,
            "examples": [{"patient_id": 100, "body": "Can I move my appointment?"}],
        },
    }


_ENTITY_SCHEMA = {
    "patient": "Patient",
    "appointment": "Appointment",
    "invoice": "Invoice",
    "form": "FormEntity",
    "message": "InboundMessage",
}


def _event_data(event_type: str) -> Schema:
    spec = EVENT_TYPES[event_type]
    required = [spec.entity_type] if spec.entity_type else []
    required += [path.split(".")[0] for path in spec.required_objects]
    properties: Schema = {}
    for key, name in _ENTITY_SCHEMA.items():
        ref = component(name)
        properties[key] = ref if key in required else {"anyOf": [ref, {"type": "null"}]}
    if "appointment.patient_id" in spec.required_ids:
        # A booking opens the patient's first-booking milestone: its patient must be known.
        properties["appointment"] = {
            "allOf": [component("Appointment")],
            "required": ["id", "patient_id"],
            "properties": {"patient_id": _ID},
        }
    return {
        "type": "object",
        "description": "The event's entities by type; each one present must have an `id`",
        "properties": properties,
        "required": required,
        "additionalProperties": True,
    }


def _event_example(event_type: str) -> Schema:
    data: Schema
    entity = EVENT_TYPES[event_type].entity_type
    if entity == "appointment":
        data = {"appointment": APPOINTMENT_EXAMPLE, "patient": PATIENT}
    elif entity == "invoice":
        data = {"invoice": {"id": "inv_9001", "patient_id": 100, "amount": 120}}
    elif entity == "form":
        data = {"form": {"id": 7, "patient_id": 100, "form_template_id": 42}}
    elif entity == "patient":
        data = {"patient": PATIENT}
    else:
        data = {"message": {"patient_id": 100, "body": "Can I move my appointment?"}}
    return {
        "event_id": "evt-8c1f",
        "type": event_type,
        "occurred_at": "2025-02-15T10:00:00Z",
        "data": copy.deepcopy(data),
    }


def event_schema_name(event_type: str) -> str:
    """``appointment.booked`` → ``AppointmentBookedEvent``."""
    return f"{_camel(event_type)}Event"


def _event_schemas() -> dict[str, Schema]:
    schemas: dict[str, Schema] = {}
    mapping: dict[str, str] = {}
    for event_type in EVENT_TYPES:
        name = event_schema_name(event_type)
        schemas[name] = {
            "title": name,
            "type": "object",
            "properties": {
                "event_id": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": 200,
                    "description": "The producer's id: the same id again in the organisation "
                    "is a duplicate (200 with the first event)",
                },
                "type": {"type": "string", "const": event_type},
                "occurred_at": {
                    "anyOf": [{**_INSTANT}, {"type": "null"}],
                    "description": "ISO 8601 (UTC when no offset); defaults to now",
                },
                "data": _event_data(event_type),
            },
            "required": ["type", "data"],
            "additionalProperties": False,
            "examples": [_event_example(event_type)],
        }
        mapping[event_type] = f"#/components/schemas/{name}"
    schemas["EventCreate"] = {
        "title": "EventCreate",
        "description": "A domain event, by `type`",
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    return schemas


def components() -> dict[str, Schema]:
    """Every component this module defines, by name."""
    return {
        "EntityId": {"title": "EntityId", **_ID, "examples": [100, "pat_8c1f"]},
        **_enum_schemas(),
        **condition_schemas(),
        **_action_schemas(),
        **_rule_body_schemas(),
        **_entity_schemas(),
        **_event_schemas(),
    }
