"""Organisation templates: the one an organisation sends under a key (its own, else the
built-in), and the API's list (merged with the built-ins), read, create or replace, delete."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.audit import service as audit
from careflow.auth import Principal
from careflow.errors import ValidationError, not_found
from careflow.kit.pagination import PageParams
from careflow.templates import repository as repo
from careflow.templates.builtin import BUILTIN_TEMPLATES, builtin_template
from careflow.templates.models import Template
from careflow.templates.rendering import TemplateSource, check_source
from careflow.templates.schemas import TemplateIn


def source_from_row(row: Template) -> TemplateSource:
    return TemplateSource(
        key=row.key,
        channel=row.channel,  # type: ignore[arg-type]
        subject=row.subject,
        body=row.body,
        html_body=row.html_body,
        built_in=False,
        organization_id=row.organization_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def resolve_template(
    session: AsyncSession, organization_id: int, key: str, channel: str
) -> TemplateSource | None:
    """The template an organisation sends under ``key``: its own override, else the built-in."""
    row = await repo.find(session, organization_id, key, channel)
    if row is not None:
        return source_from_row(row)
    return builtin_template(key, channel)


async def template_exists(
    session: AsyncSession, organization_id: int, key: str, channel: str
) -> bool:
    if builtin_template(key, channel) is not None:
        return True
    return await repo.get(session, organization_id, key, channel) is not None


async def list_templates(
    session: AsyncSession, principal: Principal, page: PageParams, channel: str | None = None
) -> tuple[list[TemplateSource], int]:
    """Every template the organisation can send, its overrides in place of the built-ins."""
    merged: dict[tuple[str, str], TemplateSource] = {
        k: v for k, v in BUILTIN_TEMPLATES.items() if channel is None or k[1] == channel
    }
    for row in await repo.list_for_org(session, principal.org_id, channel):
        merged[(row.key, row.channel)] = source_from_row(row)
    # The built-ins are a handful, so merging in memory costs less than a UNION.
    ordered = [merged[k] for k in sorted(merged)]
    return ordered[page.offset : page.offset + page.limit], len(ordered)


async def get_template(
    session: AsyncSession, principal: Principal, channel: str, key: str
) -> TemplateSource:
    row = await repo.get(session, principal.org_id, key, channel)
    if row is not None:
        return source_from_row(row)
    builtin = builtin_template(key, channel)
    if builtin is None:
        raise not_found("template")
    return builtin


def _validate(channel: str, data: TemplateIn) -> None:
    details: list[dict[str, str]] = []
    blank_body = {"field": "body", "message": "The body must not be blank"}
    if channel == "sms":
        if data.subject is not None:
            details.append({"field": "subject", "message": "An SMS template has no subject"})
        if data.html_body is not None:
            details.append({"field": "html_body", "message": "An SMS template has no HTML"})
        if not data.body.strip():
            details.append(blank_body)
    else:
        if not (data.subject or "").strip():
            details.append({"field": "subject", "message": "An email template needs a subject"})
        html = data.html_body
        if data.body and not data.body.strip():
            details.append(blank_body)
        elif html is not None and not html.strip():
            details.append({"field": "html_body", "message": "The HTML must not be blank"})
        elif not data.body and html is None:
            details.append(
                {"field": "body", "message": "An email template needs a body, an html_body or both"}
            )
    if not details:
        details = check_source(
            channel,  # type: ignore[arg-type]
            data.subject,
            data.body,
            data.html_body,
        )
    if details:
        raise ValidationError("The template is not valid", details=details)


def _snapshot(row: Template) -> dict[str, Any]:
    return {
        "key": row.key,
        "channel": row.channel,
        "subject": row.subject,
        "body": row.body,
        "html_body": row.html_body,
    }


async def put_template(
    session: AsyncSession,
    principal: Principal,
    channel: str,
    key: str,
    data: TemplateIn,
    now: datetime,
) -> tuple[TemplateSource, bool]:
    """Create or replace the organisation's override; returns it and whether it was created."""
    _validate(channel, data)
    row = await repo.get(session, principal.org_id, key, channel)
    if row is None:
        row = Template(
            organization_id=principal.org_id,
            key=key,
            channel=channel,
            subject=data.subject,
            body=data.body,
            html_body=data.html_body,
            created_at=now,
            updated_at=now,
        )
        if await repo.insert(session, row):
            await audit.record(
                session,
                principal,
                action="create",
                object_type="template",
                object_id=row.id,
                before=None,
                after=_snapshot(row),
                now=now,
            )
            return source_from_row(row), True
        # A concurrent request created it first: replace that one instead.
        row = await repo.get(session, principal.org_id, key, channel)
        assert row is not None
    before = _snapshot(row)
    row.subject = data.subject
    row.body = data.body
    row.html_body = data.html_body
    row.updated_at = now
    await session.flush()
    old, new = audit.changed_fields(before, _snapshot(row))
    identity = {"key": key, "channel": channel}
    await audit.record(
        session,
        principal,
        action="update",
        object_type="template",
        object_id=row.id,
        before={**identity, **old},
        after={**identity, **new},
        now=now,
    )
    return source_from_row(row), False


async def delete_template(
    session: AsyncSession, principal: Principal, channel: str, key: str, now: datetime
) -> None:
    """Remove the override; the built-in of the same key (if any) applies again."""
    row = await repo.get(session, principal.org_id, key, channel)
    if row is None:
        raise not_found("template")
    before = _snapshot(row)
    row_id = row.id
    await repo.delete(session, row)
    await audit.record(
        session,
        principal,
        action="delete",
        object_type="template",
        object_id=row_id,
        before=before,
        after=None,
        now=now,
    )
