"""``/console/pathway-rules``: pathway rules per trigger type in evaluation order; create,
edit, delete; and the resolve explainer, which shows for a sample payload which rule decided
the routing and, for each other rule, the condition that failed and why.

Writes mirror ``POST``/``PATCH``/``DELETE /v1/pathway-rules`` and call the same service
functions, which write the audit entries; the explainer stores nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError as PydanticValidationError

from careflow.console.pages.rules import query_builder
from careflow.console.rule_forms import errors_by_field
from careflow.console.web import PREFIX, User, reader, redirect, render, writer
from careflow.errors import ConflictError, ValidationError, pydantic_details
from careflow.kit.deps import ClockDep, SessionDep
from careflow.pathways import repository, service
from careflow.pathways.catalog import (
    CREATION_MODES,
    INBOX_VISIBILITIES,
    NEXT_ACTORS,
    PRIORITIES,
    TRIGGER_TYPES,
    TRIGGERS,
)
from careflow.pathways.schemas import PathwayRuleCreate, PathwayRuleUpdate, ResolveRequest

router = APIRouter()

LIST = "GET /v1/pathway-rules"
READ = "GET /v1/pathway-rules/{rule_id}"
CREATE = "POST /v1/pathway-rules"
UPDATE = "PATCH /v1/pathway-rules/{rule_id}"
DELETE = "DELETE /v1/pathway-rules/{rule_id}"
RESOLVE = "POST /v1/pathway-rules/resolve"
PAGE_SIZE = 100

#: The override fields a rule may set, with their choices (None: free text).
OVERRIDES: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("creation_mode", "Creation mode", CREATION_MODES),
    ("inbox_visibility", "Inbox visibility", INBOX_VISIBILITIES),
    ("journey_type", "Journey type", None),
    ("suggested_assignment", "Suggested assignment", None),
    ("suggested_priority", "Suggested priority", PRIORITIES),
    ("expected_next_actor", "Expected next actor", NEXT_ACTORS),
)
FIELD_NAMES = {
    "trigger_type",
    "rule_name",
    "priority",
    "enabled",
    "conditions",
    *(name for name, _, _ in OVERRIDES),
}
SAMPLE_PAYLOADS = {
    "appointment": {
        "appointment": {
            "id": "apt_1",
            "appointment_type_id": "type_vip_consultation",
            "type": "in_person",
            "patient_id": 100,
        }
    },
    "invoice": {"invoice": {"id": "inv_1", "type": "standard", "patient_id": 100}},
    "patient": {"patient": {"id": 100, "tags": ["vip"]}},
    "message": {"message": {"id": "msg_1", "channel": "sms", "patient_id": 100}},
    "form": {"form": {"id": 1, "form_template_id": 42, "patient_id": 100}},
}


def _trigger_options() -> list[tuple[str, str]]:
    return [(t, TRIGGERS[t].description) for t in TRIGGER_TYPES]


@router.get("/pathway-rules")
async def list_rules(
    request: Request,
    session: SessionDep,
    user: Annotated[User, reader(LIST)],
    trigger_type: Annotated[str | None, Query(max_length=64)] = None,
    enabled: Annotated[str | None, Query(pattern="^(|true|false)$")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    chosen = trigger_type if trigger_type in TRIGGERS else None
    filters = repository.RuleFilters(
        trigger_type=chosen, enabled={"true": True, "false": False}.get(enabled or "")
    )
    rules, total = await service.list_rules(
        session, user.principal, filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    groups: dict[str, list[Any]] = {}
    for rule in rules:  # already in evaluation order: trigger type, then priority
        groups.setdefault(rule.trigger_type, []).append(rule)
    shown = {"trigger_type": chosen or "", "enabled": enabled or ""}
    return render(
        request,
        "pathway_rules.html",
        user,
        groups=groups,
        triggers=TRIGGERS,
        trigger_options=_trigger_options(),
        filters=shown,
        query=query_builder(shown),
        meta={"total": total, "page": page, "limit": PAGE_SIZE},
        overrides=OVERRIDES,
        can_create=user.can(CREATE),
    )


# ---------------------------------------------------------------- the form


def _values_of(rule: Any) -> dict[str, str]:
    values = {
        "trigger_type": rule.trigger_type,
        "rule_name": rule.rule_name,
        "priority": str(rule.priority),
        "enabled": "true" if rule.enabled else "",
        "conditions": ""
        if rule.conditions is None
        else json.dumps(rule.conditions, indent=2, ensure_ascii=False),
    }
    for name, _, _ in OVERRIDES:
        values[name] = getattr(rule, name) or ""
    return values


def _values_posted(form: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(form.get(name, "")) for name in FIELD_NAMES}


def _body(values: Mapping[str, str]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The API body of the form's values; blank overrides are null (the base config's)."""
    body: dict[str, Any] = {
        "rule_name": values["rule_name"],
        "enabled": values["enabled"] == "true",
    }
    priority = values["priority"].strip()
    try:
        body["priority"] = int(priority)
    except ValueError:
        body["priority"] = priority  # the schema says what is wrong with it
    for name, _, _ in OVERRIDES:
        body[name] = values[name].strip() or None
    problems: list[dict[str, str]] = []
    text = values["conditions"].strip()
    if text:
        try:
            body["conditions"] = json.loads(text)
        except ValueError as exc:
            problems.append({"field": "conditions", "message": f"not valid JSON: {exc}"})
    else:
        body["conditions"] = None
    return body, problems


def _form_page(
    request: Request,
    user: User,
    values: Mapping[str, str],
    *,
    rule: Any = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    trigger = TRIGGERS.get(values.get("trigger_type", ""))
    return render(
        request,
        "pathway_rule_form.html",
        user,
        status_code=status_code,
        values=values,
        rule=rule,
        errors=errors or {},
        form_url=f"{PREFIX}/pathway-rules/{rule.id}" if rule else f"{PREFIX}/pathway-rules/new",
        editable=user.can(UPDATE if rule else CREATE),
        can_delete=rule is not None and user.can(DELETE),
        trigger_options=_trigger_options(),
        trigger=trigger,
        overrides=OVERRIDES,
    )


def _refused(exc: PydanticValidationError | ValidationError | ConflictError) -> list[Any]:
    if isinstance(exc, PydanticValidationError):
        return pydantic_details(list(exc.errors()))
    return list(exc.details) or [{"field": "_form", "message": exc.message}]


@router.get("/pathway-rules/new")
async def new_rule(
    request: Request,
    user: Annotated[User, reader(CREATE)],
    trigger_type: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    values = {name: "" for name in FIELD_NAMES}
    values.update(trigger_type=trigger_type or TRIGGER_TYPES[0], priority="0", enabled="true")
    return _form_page(request, user, values)


@router.post("/pathway-rules/new")
async def create_rule(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, writer(CREATE)],
) -> Response:
    values = _values_posted(await request.form())
    body, problems = _body(values)
    body["trigger_type"] = values["trigger_type"]
    try:
        if problems:
            raise ValidationError(details=problems)
        rule = await service.create_rule(
            session, user.principal, PathwayRuleCreate.model_validate(body), clock.now()
        )
    except (PydanticValidationError, ValidationError, ConflictError) as exc:
        await session.rollback()  # a refused unique write leaves the transaction unusable
        errors = errors_by_field(_refused(exc), FIELD_NAMES)
        return _form_page(request, user, values, errors=errors, status_code=400)
    return redirect(f"{PREFIX}/pathway-rules/{rule.id}?saved=1", request)


# Declared before /{rule_id} so "resolve" is never read as a rule id.
@router.get("/pathway-rules/resolve")
async def resolve_page(
    request: Request,
    user: Annotated[User, reader(RESOLVE)],
    trigger_type: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    chosen = trigger_type if trigger_type in TRIGGERS else "appointment.booked"
    sample = SAMPLE_PAYLOADS.get(TRIGGERS[chosen].entity_type, {})
    return _resolve_page(request, user, chosen, json.dumps(sample, indent=2), None, {})


def _resolve_page(
    request: Request,
    user: User,
    trigger_type: str,
    data: str,
    explanation: Any,
    errors: dict[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "pathway_resolve.html",
        user,
        status_code=status_code,
        trigger_options=_trigger_options(),
        trigger_type=trigger_type,
        data=data,
        explanation=explanation,
        errors=errors,
        overrides=OVERRIDES,
    )


@router.post("/pathway-rules/resolve")
async def resolve(
    request: Request, session: SessionDep, user: Annotated[User, writer(RESOLVE)]
) -> HTMLResponse:
    """The explainer: nothing is stored, so no audit entry."""
    form = await request.form()
    trigger_type, data = str(form.get("trigger_type", "")), str(form.get("data", ""))
    errors: dict[str, str] = {}
    try:
        payload = json.loads(data) if data.strip() else {}
    except ValueError as exc:
        errors["data"] = f"not valid JSON: {exc}"
        return _resolve_page(request, user, trigger_type, data, None, errors, 400)
    try:
        body = ResolveRequest.model_validate({"trigger_type": trigger_type, "data": payload})
        explanation = await service.explain_rules(session, user.principal, body)
    except (PydanticValidationError, ValidationError) as exc:
        errors = errors_by_field(_refused(exc), {"trigger_type", "data"})
        return _resolve_page(request, user, trigger_type, data, None, errors, 400)
    return _resolve_page(request, user, trigger_type, data, explanation, errors)


@router.get("/pathway-rules/{rule_id}")
async def show_rule(
    request: Request, rule_id: str, session: SessionDep, user: Annotated[User, reader(READ)]
) -> HTMLResponse:
    rule = await service.get_rule(session, user.principal, rule_id)
    return _form_page(request, user, _values_of(rule), rule=rule)


@router.post("/pathway-rules/{rule_id}")
async def update_rule(
    request: Request,
    rule_id: str,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, writer(UPDATE)],
) -> Response:
    rule = await service.get_rule(session, user.principal, rule_id)
    values = _values_posted(await request.form())
    values["trigger_type"] = rule.trigger_type  # it cannot change
    body, problems = _body(values)
    try:
        if problems:
            raise ValidationError(details=problems)
        await service.update_rule(
            session, user.principal, rule.id, PathwayRuleUpdate.model_validate(body), clock.now()
        )
    except (PydanticValidationError, ValidationError, ConflictError) as exc:
        await session.rollback()
        errors = errors_by_field(_refused(exc), FIELD_NAMES)
        rule = await service.get_rule(session, user.principal, rule_id)
        return _form_page(request, user, values, rule=rule, errors=errors, status_code=400)
    return redirect(f"{PREFIX}/pathway-rules/{rule_id}?saved=1", request)


@router.post("/pathway-rules/{rule_id}/delete")
async def delete_rule(
    request: Request,
    rule_id: str,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, writer(DELETE)],
) -> Response:
    await service.delete_rule(session, user.principal, rule_id, clock.now())
    return redirect(f"{PREFIX}/pathway-rules", request)
