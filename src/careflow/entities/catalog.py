"""The entities careflow keeps snapshots of, and the field that links each to its patient."""

from __future__ import annotations

ENTITY_TYPES = ("patient", "appointment", "invoice", "form")

# The entity whose snapshot carries the patient id for a non-patient entity.
PATIENT_LINK = {"appointment": "patient_id", "invoice": "patient_id", "form": "patient_id"}


def context_entities(subject: str | None) -> tuple[str, ...]:
    """The entities in the context of an event about ``subject`` (``appointment``, ``message``
    …): the subject itself and, as every subject leads to one, its patient."""
    if subject is None or subject == "patient":
        return ("patient",)
    return (subject, "patient")
