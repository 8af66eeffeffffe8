"""Small helpers the executors share: reading their config and the patient snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from careflow.actions.base import ActionOutcome, PermanentActionError


def skipped(reason: str) -> ActionOutcome:
    return ActionOutcome(status="skipped", reason=reason)


def required_int(config: Mapping[str, Any], name: str) -> int:
    """A required integer field of the action; a bad one cannot be fixed by retrying."""
    value = config.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PermanentActionError(f"action config field {name!r} must be an integer")
    return value


def required_str(config: Mapping[str, Any], name: str) -> str:
    value = config.get(name)
    if not isinstance(value, str) or not value:
        raise PermanentActionError(f"action config field {name!r} must be a non-empty string")
    return value


def patient_of(context: Mapping[str, Any]) -> Mapping[str, Any] | None:
    patient = context.get("patient")
    return patient if isinstance(patient, Mapping) else None


def contact_of(patient: Mapping[str, Any] | None, field: str) -> str | None:
    """The patient's email or phone, or None when absent or blank."""
    if patient is None:
        return None
    value = patient.get(field)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()


def opted_out(patient: Mapping[str, Any] | None, field: str) -> bool:
    return bool(patient is not None and patient.get(field) is True)
