"""``/v1/patients/{patient_id}/gate``: may this patient book or open the portal?"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from careflow.auth import FormsReadDep
from careflow.forms import service as forms
from careflow.forms.schemas import GateOut, PendingFormOut
from careflow.kit.deps import SessionDep
from careflow.kit.schemas import DataEnvelope
from careflow.kit.types import canonical_entity_id

router = APIRouter(prefix="/v1/patients", tags=["patients"])


@router.get(
    "/{patient_id}/gate",
    summary="Whether a blocking form is pending for the patient",
)
async def patient_gate(
    session: SessionDep,
    principal: FormsReadDep,
    patient_id: Annotated[str, Path(min_length=1, max_length=128)],
) -> DataEnvelope[GateOut]:
    gate = await forms.patient_gate(session, principal, canonical_entity_id(patient_id))
    return DataEnvelope(
        data=GateOut(
            patient_id=gate.patient_id,
            blocked=gate.blocked,
            pending_forms=[PendingFormOut.of(f) for f in gate.pending_forms],
        )
    )
