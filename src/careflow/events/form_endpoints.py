"""``POST /v1/forms/{id}/complete``: completing a form is an event (``form.completed``).

The route sits with ingestion rather than in ``forms/``: completing a form marks it and
ingests the event that dispatches to rules, and ``events`` already depends on ``forms``
(dispatch reads pending forms), so ``forms`` cannot call ingestion itself.
"""

from __future__ import annotations

from fastapi import APIRouter

from careflow.auth import IngestDep
from careflow.events import service
from careflow.forms.endpoints import FormIdPath
from careflow.forms.schemas import FormOut
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.ids import row_id
from careflow.kit.schemas import DataEnvelope

router = APIRouter(prefix="/v1/forms", tags=["forms"])


@router.post(
    "/{form_id}/complete",
    summary="Mark a pending form completed",
    responses={409: {"description": "`form_already_completed`"}},
)
async def complete_form(
    session: SessionDep, principal: IngestDep, clock: ClockDep, form_id: FormIdPath
) -> DataEnvelope[FormOut]:
    form = await service.complete_form(session, principal, row_id(form_id, "form"), clock.now())
    return DataEnvelope(data=FormOut.of(form))
