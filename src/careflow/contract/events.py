"""``EventCreate`` and the entities it carries: ``POST /v1/events`` bodies discriminated on
``type``, each naming the entities it requires and the fields careflow reads from them
(``entities/validation.READ_FIELDS`` checks the same fields), extra fields allowed.
"""

from __future__ import annotations

import copy

from careflow.contract.names import Schema, camel
from careflow.entities.validation import MAX_ID_LENGTH
from careflow.events.catalog import EVENT_TYPES
from careflow.examples import PATIENT
from careflow.kit.schemas import NOT_BLANK_PATTERN, component

ID: Schema = {
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
        "properties": {"id": ID, **properties},
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


def entity_schemas() -> dict[str, Schema]:
    patient_link = {
        "anyOf": [ID, {"type": "null"}],
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
            "properties": {"patient_id": ID},
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
    return f"{camel(event_type)}Event"


def event_schemas() -> dict[str, Schema]:
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
