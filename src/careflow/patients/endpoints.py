"""``/v1/patients/{patient_id}/gate``: may this patient book or open the portal?
``/v1/patients/{patient_id}/preferences``: the patient's email and SMS opt-outs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from careflow.auth import AdminDep, FormsReadDep, StaffDep
from careflow.forms import service as forms
from careflow.forms.schemas import GateOut, PendingFormOut
from careflow.kit.deps import ClockDep, SessionDep, SettingsDep
from careflow.kit.schemas import DataEnvelope
from careflow.kit.types import canonical_entity_id
from careflow.patients import service
from careflow.patients.schemas import PreferencesIn, PreferencesOut

router = APIRouter(prefix="/v1/patients", tags=["patients"])

PatientIdParam = Annotated[str, Path(min_length=1, max_length=128)]


@router.get(
    "/{patient_id}/gate",
    summary="Whether a blocking form is pending for the patient",
)
async def patient_gate(
    session: SessionDep,
    principal: FormsReadDep,
    patient_id: PatientIdParam,
) -> DataEnvelope[GateOut]:
    gate = await forms.patient_gate(session, principal, canonical_entity_id(patient_id))
    return DataEnvelope(
        data=GateOut(
            patient_id=gate.patient_id,
            blocked=gate.blocked,
            pending_forms=[PendingFormOut.of(f) for f in gate.pending_forms],
        )
    )


@router.get(
    "/{patient_id}/preferences",
    summary="The patient's email and SMS opt-outs and what decides each",
)
async def get_preferences(
    session: SessionDep,
    principal: StaffDep,
    settings: SettingsDep,
    patient_id: PatientIdParam,
) -> DataEnvelope[PreferencesOut]:
    preferences = await service.get_preferences(
        session, principal, settings, canonical_entity_id(patient_id)
    )
    return DataEnvelope(data=PreferencesOut.of(preferences))


@router.put(
    "/{patient_id}/preferences",
    summary="Set careflow's own opt-outs of the patient (admin)",
)
async def put_preferences(
    body: PreferencesIn,
    session: SessionDep,
    principal: AdminDep,
    settings: SettingsDep,
    clock: ClockDep,
    patient_id: PatientIdParam,
) -> DataEnvelope[PreferencesOut]:
    preferences = await service.put_preferences(
        session,
        principal,
        settings,
        canonical_entity_id(patient_id),
        body.wanted(),
        now=clock.now(),
    )
    return DataEnvelope(data=PreferencesOut.of(preferences))
