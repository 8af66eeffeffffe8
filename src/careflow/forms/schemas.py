"""Response bodies of ``/v1/forms`` and the patient gate."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel

from careflow.forms.models import Form
from careflow.kit.clock import isoformat_z
from careflow.kit.schemas import EntityIdField, UTCDatetime, documented_as

FormStatusParam = Literal["pending", "completed"]


class FormOut(BaseModel):
    id: int
    patient_id: EntityIdField
    form_template_id: int
    blocking: bool
    description: str | None
    status: Annotated[str, documented_as("FormStatus")]
    execution_id: int | None
    created_at: UTCDatetime
    completed_at: UTCDatetime | None

    @classmethod
    def of(cls, row: Form) -> FormOut:
        return cls(**{name: getattr(row, name) for name in cls.model_fields})


def form_snapshot(row: Form) -> dict[str, Any]:
    """The form as JSON data: what a ``form.completed`` event carries."""
    data = FormOut.of(row).model_dump()
    data["created_at"] = isoformat_z(row.created_at)
    data["completed_at"] = isoformat_z(row.completed_at)
    return data


class PendingFormOut(BaseModel):
    id: int
    form_template_id: int
    blocking: bool
    created_at: UTCDatetime

    @classmethod
    def of(cls, row: Form) -> PendingFormOut:
        return cls(**{name: getattr(row, name) for name in cls.model_fields})


class GateOut(BaseModel):
    patient_id: EntityIdField
    blocked: bool
    pending_forms: list[PendingFormOut]
