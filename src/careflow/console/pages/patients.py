"""``/console/patients/{id}``: one patient's journey in the caller's organisation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from careflow.console import patient_journey
from careflow.console.web import User, reader, render
from careflow.kit.deps import SessionDep
from careflow.kit.types import canonical_entity_id

router = APIRouter()


@router.get("/patients/{patient_id}")
async def journey_page(
    request: Request,
    session: SessionDep,
    user: Annotated[User, reader("GET /v1/automations/executions")],
    patient_id: Annotated[str, Path(min_length=1, max_length=128)],
) -> Response:
    journey = await patient_journey.patient_journey(
        session, user.principal, canonical_entity_id(patient_id)
    )
    return render(
        request, "patient_journey.html", user, journey=journey, limit=patient_journey.LIMIT
    )
