"""Plain-function factories for executor and forms tests: rows the executors depend on."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.actions.base import ActionContext
from careflow.config import Settings
from careflow.executions.models import Execution
from careflow.forms.models import Form, FormStatus
from careflow.kit.clock import Clock
from careflow.kit.types import EntityRef

_occurrences = iter(range(1, 1_000_000))


async def create_execution(
    session: AsyncSession,
    *,
    org: int = 1,
    patient_id: EntityRef | None = 100,
    now: datetime,
    **overrides: Any,
) -> Execution:
    values: dict[str, Any] = {
        "organization_id": org,
        "automation_rule_id": None,
        "automation_rule_name": "Test rule",
        "rule_version": 1,
        "trigger_event": "patient.onboarded",
        "trigger_entity_type": "patient",
        "trigger_entity_id": patient_id if patient_id is not None else 1,
        "patient_id": patient_id,
        "occurrence_key": f"occ-{next(_occurrences)}",
        "status": "running",
        "actions": [],
        "context": {},
        "executed_at": now,
    }
    values.update(overrides)
    execution = Execution(**values)
    session.add(execution)
    await session.flush()
    return execution


async def create_form(
    session: AsyncSession,
    *,
    org: int = 1,
    patient_id: EntityRef = 100,
    now: datetime,
    **overrides: Any,
) -> Form:
    values: dict[str, Any] = {
        "organization_id": org,
        "patient_id": patient_id,
        "form_template_id": 42,
        "blocking": True,
        "description": "Privacy Policy & GDPR Consent",
        "status": FormStatus.PENDING,
        "execution_id": None,
        "action_index": None,
        "created_at": now,
    }
    values.update(overrides)
    form = Form(**values)
    session.add(form)
    await session.flush()
    return form


def make_context(
    session: AsyncSession,
    *,
    settings: Settings,
    clock: Clock,
    services: dict[str, Any],
    execution: Execution,
    config: Mapping[str, Any],
    action_index: int = 0,
    patient: Mapping[str, Any] | None = None,
    attempt: int = 1,
    is_last_attempt: bool = False,
) -> ActionContext:
    context: dict[str, Any] = {}
    if patient is not None:
        context["patient"] = dict(patient)
    return ActionContext(
        session=session,
        settings=settings,
        clock=clock,
        services=services,
        organization_id=execution.organization_id,
        execution_id=execution.id,
        action_index=action_index,
        config=config,
        patient_id=execution.patient_id,
        context=context,
        attempt=attempt,
        is_last_attempt=is_last_attempt,
    )
