"""``POST /v1/automations/rules/{id}/test``: what a rule would do for a stored entity.

Nothing is written: no execution, form, message or job. The previews are side-effect free
by contract, and the work runs inside a savepoint that is rolled back regardless, so even a
misbehaving preview cannot leave a row behind.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import AdminDep, Principal
from careflow.automations.service import get_rule
from careflow.conditions.cache import compiled_conditions
from careflow.entities.context import entity_context
from careflow.entities.validation import entity_id_problem
from careflow.errors import not_found
from careflow.kit.deps import SessionDep
from careflow.kit.ids import row_id, row_id_path
from careflow.kit.schemas import DataEnvelope, EntityIdField, StrictInput, documented_as
from careflow.kit.types import canonical_entity_id

router = APIRouter(prefix="/v1/automations", tags=["automations"])


class RuleTestIn(StrictInput):
    trigger_entity_type: Annotated[
        Literal["patient", "appointment", "invoice", "form"], documented_as("EntityType")
    ]
    trigger_entity_id: Annotated[EntityIdField, documented_as("EntityId")] = Field(
        examples=[100]
    )

    @field_validator("trigger_entity_id", mode="before")
    @classmethod
    def _entity_id(cls, value: Any) -> Any:
        problem = entity_id_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class RuleTestOut(BaseModel):
    would_execute: bool = Field(description="The rule is enabled and its conditions match")
    conditions_matched: bool
    failed_conditions: list[str] = Field(
        description="The top-level condition keys that did not match"
    )
    actions_preview: list[dict[str, Any]] = Field(
        description="Per action: its `type` and config, plus what its executor would do "
        "(`would_create_form`, `would_send_to`, `skip_reason`, …). A message action whose "
        "template is gone or fails to render on this entity has `would_send_to: null` and "
        "the `error` a real run would record. The preview renders over the entity's stored "
        "snapshot and its patient; an event may carry more, which a template can use."
    )


async def simulate_rule(
    session: AsyncSession, principal: Principal, rule_id: int, body: RuleTestIn
) -> RuleTestOut:
    from careflow.actions.registry import EXECUTORS

    rule = await get_rule(session, principal, rule_id)
    entity_id = canonical_entity_id(body.trigger_entity_id)
    savepoint = await session.begin_nested()
    try:
        context = await entity_context(
            session, principal.org_id, body.trigger_entity_type, entity_id
        )
        if context is None:
            raise not_found("entity")
        compiled = compiled_conditions(rule)
        matched = compiled(context)
        previews: list[dict[str, Any]] = []
        for action in rule.actions or []:
            entry: dict[str, Any] = dict(action)
            executor = EXECUTORS.get(str(action.get("type")))
            if executor is not None:
                entry.update(await executor.preview(session, principal.org_id, action, context))
            previews.append(entry)
    finally:
        await savepoint.rollback()
    return RuleTestOut(
        would_execute=bool(rule.enabled and matched),
        conditions_matched=matched,
        failed_conditions=[] if matched else compiled.failed_entries(context),
        actions_preview=previews,
    )


@router.post(
    "/rules/{id}/test",
    summary="Simulate the rule for a stored entity, without side effects (admin)",
    description=(
        "Builds the context a real event would (the entity's stored snapshot joined with its "
        "patient), evaluates the rule's conditions and previews each action. Nothing is "
        "created or sent. 404 `automation_rule_not_found`, 404 `entity_not_found` when "
        "careflow has no snapshot of the entity."
    ),
    responses={404: {"description": "`automation_rule_not_found` or `entity_not_found`"}},
)
async def test_automation_rule(
    session: SessionDep,
    principal: AdminDep,
    rule_id: Annotated[str, row_id_path(alias="id")],
    body: RuleTestIn,
) -> DataEnvelope[RuleTestOut]:
    rule_pk = row_id(rule_id, "automation_rule")
    return DataEnvelope(data=await simulate_rule(session, principal, rule_pk, body))
