"""``/console/rules``: automation rules — the list with the API's filters, forms generated
from the trigger and action catalogs, enable/disable, delete, and the dry-run preview.

Each write mirrors one API operation (``writer("PUT /v1/automations/rules/{rule_id}")``)
and calls the same service function, which writes the audit entry (create, update, delete);
the dry-run changes nothing and so records none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError as PydanticValidationError

from careflow.automations import service
from careflow.automations.catalog import TRIGGERS_BY_EVENT
from careflow.automations.simulation import RuleTestIn, simulate_rule
from careflow.conditions import OPERATORS
from careflow.console.rule_forms import (
    NEW_ACTION_TYPE,
    ActionForm,
    RuleForm,
    action_choices,
    errors_by_field,
    trigger_choices,
)
from careflow.console.web import PREFIX, User, reader, redirect, render, writer
from careflow.entities.catalog import context_entities
from careflow.errors import CareflowError, ValidationError, pydantic_details
from careflow.kit.deps import ClockDep, SessionDep
from careflow.kit.ids import row_id
from careflow.kit.pagination import PageParams

router = APIRouter()

LIST = "GET /v1/automations/rules"
READ = "GET /v1/automations/rules/{rule_id}"
CREATE = "POST /v1/automations/rules"
UPDATE = "PUT /v1/automations/rules/{rule_id}"
DELETE = "DELETE /v1/automations/rules/{rule_id}"
TEST = "POST /v1/automations/rules/{id}/test"
ENTITY_TYPES = ("patient", "appointment", "invoice", "form")


def query_builder(params: dict[str, Any]) -> Callable[..., str]:
    """``query(page=2)``: this page's query string with some parameters replaced."""

    def query(**changes: Any) -> str:
        merged = {**params, **changes}
        return urlencode({k: v for k, v in merged.items() if v not in (None, "")})

    return query


def _enabled_filter(value: str | None) -> bool | None:
    return {"true": True, "false": False}.get(value or "")


@router.get("/rules")
async def list_rules(
    request: Request,
    session: SessionDep,
    user: Annotated[User, reader(LIST)],
    trigger_event: Annotated[str | None, Query(max_length=64)] = None,
    enabled: Annotated[str | None, Query(pattern="^(|true|false)$")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> HTMLResponse:
    params = PageParams(page=page, limit=25)
    rules, total = await service.list_rules(
        session,
        user.principal,
        trigger_event=trigger_event or None,
        enabled=_enabled_filter(enabled),
        page=params,
    )
    stats = await service.run_stats(session, user.principal, rules)
    filters = {"trigger_event": trigger_event or "", "enabled": enabled or ""}
    return render(
        request,
        "rules.html",
        user,
        rules=rules,
        stats=stats,
        meta=params.meta(total),
        filters=filters,
        query=query_builder(filters),
        triggers=trigger_choices(),
        can_create=user.can(CREATE),
        can_update=user.can(UPDATE),
    )


# ---------------------------------------------------------------- the form


def _form_page(
    request: Request,
    user: User,
    form: RuleForm,
    *,
    rule: Any = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    test: dict[str, Any] | None = None,
) -> HTMLResponse:
    trigger = TRIGGERS_BY_EVENT.get(form.trigger_event)
    entities = sorted(context_entities(trigger["entity_type"])) if trigger else []
    form_url = f"{PREFIX}/rules/{rule.id}" if rule is not None else f"{PREFIX}/rules/new"
    editable = user.can(UPDATE if rule is not None else CREATE)
    return render(
        request,
        "rule_form.html",
        user,
        status_code=status_code,
        form=form,
        rule=rule,
        errors=errors or {},
        form_url=form_url,
        editable=editable,
        triggers=trigger_choices(),
        action_types=action_choices(),
        entities=entities,
        operators=sorted(OPERATORS),
        can_test=rule is not None and user.can(TEST),
        can_delete=rule is not None and user.can(DELETE),
        entity_types=ENTITY_TYPES,
        default_entity_type=trigger["entity_type"] if trigger else "patient",
        test=test or {},
    )


def _rearranged(form: RuleForm, op: str) -> RuleForm:
    """The form after a button that only rearranges it (adds or removes an action slot)."""
    if op == "add_action":
        form.actions.append(ActionForm(NEW_ACTION_TYPE))
    elif op.startswith("remove_action:"):
        index = op.partition(":")[2]
        if index.isdigit() and int(index) < len(form.actions):
            del form.actions[int(index)]
    return form


async def _posted(request: Request) -> tuple[RuleForm, str]:
    data = await request.form()
    return RuleForm.of_form(data), str(data.get("op") or "save")


@router.get("/rules/new")
async def new_rule(request: Request, user: Annotated[User, reader(CREATE)]) -> HTMLResponse:
    return _form_page(request, user, RuleForm())


@router.post("/rules/new")
async def create_rule(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, writer(CREATE)],
) -> Response:
    form, op = await _posted(request)
    if op != "save":
        return _form_page(request, user, _rearranged(form, op))
    body, problems = form.payload()
    if problems:
        body.pop("conditions", None)
    try:
        # With console-side problems (conditions that are not JSON) the service still checks
        # the rest, so one answer names every problem; what it stored is rolled back below.
        rule = await service.create_rule(session, user.principal, body, now=clock.now())
        rule_pk = rule.id
        if problems:
            raise ValidationError(details=problems)
    except ValidationError as exc:
        details = exc.details if exc.details == problems else [*problems, *exc.details]
        errors = errors_by_field(details, form.field_names())
        await session.rollback()  # nothing of a refused form is kept
        return _form_page(request, user, form, errors=errors, status_code=400)
    return redirect(f"{PREFIX}/rules/{rule_pk}?saved=1", request)


@router.get("/rules/{rule_id}")
async def show_rule(
    request: Request,
    rule_id: str,
    session: SessionDep,
    user: Annotated[User, reader(READ)],
) -> HTMLResponse:
    rule = await service.get_rule(session, user.principal, row_id(rule_id, "automation_rule"))
    return _form_page(request, user, RuleForm.of_rule(rule), rule=rule)


@router.post("/rules/{rule_id}")
async def update_rule(
    request: Request,
    rule_id: str,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, writer(UPDATE)],
) -> Response:
    rule_pk = row_id(rule_id, "automation_rule")
    rule = await service.get_rule(session, user.principal, rule_pk)
    form, op = await _posted(request)
    if op != "save":
        return _form_page(request, user, _rearranged(form, op), rule=rule)
    body, problems = form.payload()
    if problems:
        body.pop("conditions", None)
    try:
        # With console-side problems the service still checks the rest; the change it makes
        # then is rolled back below with the refusal.
        await service.update_rule(session, user.principal, rule_pk, body, now=clock.now())
        if problems:
            raise ValidationError(details=problems)
    except ValidationError as exc:
        details = exc.details if exc.details == problems else [*problems, *exc.details]
        errors = errors_by_field(details, form.field_names())
        await session.rollback()
        rule = await service.get_rule(session, user.principal, rule_pk)
        return _form_page(request, user, form, rule=rule, errors=errors, status_code=400)
    return redirect(f"{PREFIX}/rules/{rule_pk}?saved=1", request)


@router.post("/rules/{rule_id}/enabled")
async def set_enabled(
    request: Request,
    rule_id: str,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, writer(UPDATE)],
) -> Response:
    data = await request.form()
    enabled = data.get("enabled") == "true"
    rule = await service.update_rule(
        session,
        user.principal,
        row_id(rule_id, "automation_rule"),
        {"enabled": enabled},
        now=clock.now(),
    )
    back = str(data.get("back") or "")
    target = back if back.startswith(f"{PREFIX}/rules") else f"{PREFIX}/rules/{rule.id}"
    return redirect(target, request)


@router.post("/rules/{rule_id}/delete")
async def delete_rule(
    request: Request,
    rule_id: str,
    session: SessionDep,
    clock: ClockDep,
    user: Annotated[User, writer(DELETE)],
) -> Response:
    await service.delete_rule(
        session, user.principal, row_id(rule_id, "automation_rule"), now=clock.now()
    )
    return redirect(f"{PREFIX}/rules", request)


@router.post("/rules/{rule_id}/test")
async def test_rule(
    request: Request,
    rule_id: str,
    session: SessionDep,
    user: Annotated[User, writer(TEST)],
) -> HTMLResponse:
    """The dry-run: what the rule would do for a stored entity (nothing is written)."""
    rule = await service.get_rule(session, user.principal, row_id(rule_id, "automation_rule"))
    data = await request.form()
    entity_type = str(data.get("trigger_entity_type", ""))
    entity_id = str(data.get("trigger_entity_id", "")).strip()
    test: dict[str, Any] = {"entity_type": entity_type, "entity_id": entity_id}
    status_code = 200
    try:
        body = RuleTestIn.model_validate(
            {"trigger_entity_type": entity_type, "trigger_entity_id": entity_id}
        )
        test["result"] = await simulate_rule(session, user.principal, rule.id, body)
    except PydanticValidationError as exc:
        test["errors"] = errors_by_field(
            pydantic_details(list(exc.errors())), {"trigger_entity_type", "trigger_entity_id"}
        )
        status_code = 400
    except CareflowError as exc:
        test["errors"] = {"_form": exc.message}
        status_code = exc.status_code
    if request.headers.get("HX-Request") == "true":
        # htmx swaps 2xx answers only: the fragment says what went wrong.
        return render(request, "rule_test.html", user, test=test)
    return _form_page(
        request, user, RuleForm.of_rule(rule), rule=rule, test=test, status_code=status_code
    )
