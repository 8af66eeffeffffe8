"""``/v1/forms``: form instances opened by ``require_form`` (automations family)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from careflow.auth import FormsReadDep
from careflow.forms import service
from careflow.forms.schemas import FormOut, FormStatusParam
from careflow.kit.deps import SessionDep
from careflow.kit.ids import row_id, row_id_path
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import DataEnvelope, ListEnvelope, PageMeta
from careflow.kit.types import canonical_entity_id

router = APIRouter(prefix="/v1/forms", tags=["forms"])

FormIdPath = Annotated[str, row_id_path()]


@router.get("", summary="List form instances, newest first")
async def list_forms(
    session: SessionDep,
    principal: FormsReadDep,
    page: PageDep,
    patient_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    status: FormStatusParam | None = None,
) -> ListEnvelope[FormOut]:
    rows, total = await service.list_forms(
        session,
        principal,
        page,
        patient_id=canonical_entity_id(patient_id) if patient_id is not None else None,
        status=status,
    )
    return ListEnvelope(data=[FormOut.of(r) for r in rows], meta=PageMeta(**page.meta(total)))


@router.get("/{form_id}", summary="Get one form instance")
async def get_form(
    session: SessionDep, principal: FormsReadDep, form_id: FormIdPath
) -> DataEnvelope[FormOut]:
    form = await service.get_form(session, principal, row_id(form_id, "form"))
    return DataEnvelope(data=FormOut.of(form))
