"""What each event type must carry, and which entity it is about."""

from __future__ import annotations

from dataclasses import dataclass

from careflow.entities.catalog import ENTITY_TYPES

# Derived triggers careflow fires itself (at most once per patient); producers may send them too.
FIRST_LOGIN = "patient.first_login"
FIRST_BOOKED = "appointment.first_booked"
MILESTONES = (FIRST_LOGIN, FIRST_BOOKED)


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    # The entity the event is about: its id is required and becomes the trigger entity.
    entity_type: str | None
    # Further dotted paths under ``data`` that must hold an entity id.
    required_ids: tuple[str, ...] = ()
    # Dotted paths under ``data`` that must hold an object (events about no stored entity).
    required_objects: tuple[str, ...] = ()


def _types() -> dict[str, EventType]:
    out: dict[str, EventType] = {}
    for name in (
        "patient.onboarded",
        "patient.logged_in",
        "patient.updated",
        FIRST_LOGIN,
    ):
        out[name] = EventType(name, "patient")
    for name in (
        "appointment.rescheduled",
        "appointment.cancelled",
        "appointment.completed",
    ):
        out[name] = EventType(name, "appointment")
    # A booking opens the patient's first-booking milestone, so its patient must be known.
    for name in ("appointment.booked", FIRST_BOOKED):
        out[name] = EventType(name, "appointment", required_ids=("appointment.patient_id",))
    for name in ("invoice.created", "invoice.overdue", "invoice.paid"):
        out[name] = EventType(name, "invoice")
    out["form.completed"] = EventType("form.completed", "form")
    # A message is not a stored entity; its trigger entity is its patient when known.
    out["message.received"] = EventType("message.received", None, required_objects=("message",))
    return out


EVENT_TYPES: dict[str, EventType] = _types()


def trigger_entity_type(trigger: str) -> str | None:
    """The entity a trigger is about: ``appointment.first_booked`` → ``appointment``."""
    known = EVENT_TYPES.get(trigger)
    if known is not None:
        return known.entity_type
    prefix = trigger.partition(".")[0]
    return prefix if prefix in ENTITY_TYPES else None
