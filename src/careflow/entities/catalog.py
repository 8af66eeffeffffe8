"""The entities careflow keeps snapshots of, and the field that links each to its patient."""

from __future__ import annotations

ENTITY_TYPES = ("patient", "appointment", "invoice", "form")

# The entity whose snapshot carries the patient id for a non-patient entity.
PATIENT_LINK = {"appointment": "patient_id", "invoice": "patient_id", "form": "patient_id"}
