"""``/v1/templates``: the organisation's email and SMS templates (automations family)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from careflow.auth import AdminDep
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.pagination import PageDep
from careflow.kit.schemas import DataEnvelope, ListEnvelope, PageMeta
from careflow.templates import service
from careflow.templates.schemas import KEY_PATTERN, ChannelParam, TemplateIn, TemplateOut

router = APIRouter(prefix="/v1/templates", tags=["templates"])

KeyPath = Annotated[str, Path(pattern=KEY_PATTERN, description="Template key")]


@router.get("", summary="List templates: built-ins merged with the organisation's overrides")
async def list_templates(
    session: SessionDep,
    principal: AdminDep,
    page: PageDep,
    channel: ChannelParam | None = None,
) -> ListEnvelope[TemplateOut]:
    items, total = await service.list_templates(session, principal, page, channel)
    return ListEnvelope(data=[TemplateOut.of(t) for t in items], meta=PageMeta(**page.meta(total)))


@router.get("/{channel}/{key}", summary="Get the template the organisation sends under a key")
async def get_template(
    session: SessionDep, principal: AdminDep, channel: ChannelParam, key: KeyPath
) -> DataEnvelope[TemplateOut]:
    source = await service.get_template(session, principal, channel, key)
    return DataEnvelope(data=TemplateOut.of(source))


@router.put(
    "/{channel}/{key}",
    summary="Create or replace the organisation's template (201 created, 200 replaced)",
    responses={201: {"description": "Created"}},
)
async def put_template(
    session: SessionDep,
    principal: AdminDep,
    clock: ClockDep,
    channel: ChannelParam,
    key: KeyPath,
    body: TemplateIn,
    response: Response,
) -> DataEnvelope[TemplateOut]:
    source, created = await service.put_template(
        session, principal, channel, key, body, clock.now()
    )
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return DataEnvelope(data=TemplateOut.of(source))


@router.delete(
    "/{channel}/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete the organisation's override (the built-in applies again)",
)
async def delete_template(
    session: SessionDep,
    principal: AdminDep,
    clock: ClockDep,
    channel: ChannelParam,
    key: KeyPath,
) -> Response:
    await service.delete_template(session, principal, channel, key, clock.now())
    return Response(status_code=status.HTTP_204_NO_CONTENT)
