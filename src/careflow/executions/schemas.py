"""Execution bodies, shaped as the Automations API reference shows them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field

from careflow.executions.models import Execution, ExecutionAction
from careflow.kit.schemas import COMPONENT_MARK, EntityIdField, UTCDatetime, documented_as

# Keys an action entry reserves; a config field of the same name is renamed
# (``update_segment``'s ``action: add`` becomes ``segment_action``).
_RESERVED = ("action", "type", "status", "error", "duration_ms", "attempts")

# An action's status in ``actions_executed``: final, or waiting (``deferred`` for its time,
# ``throttled`` by a rate limit; neither uses an attempt).
ACTION_RESULT_STATUSES = ("success", "failure", "skipped", "deferred", "throttled")

ACTIONS_EXECUTED_DOC = (
    "One entry per action that has run (or is waiting), in action order; actions still "
    "to come are not listed. Each entry: `action` (its type), `status` (`success`, `failure`, "
    "`skipped` with a `reason`, `deferred` with `deferred_until`, or `throttled` with "
    "`throttled_until` and the `reason`: a rate limit holds it back), the ids of its effect "
    "(`form_id`, `email_id`, `sms_id`, …) and `error` on failure. The single-execution view "
    "adds `type`, the action's config fields (`update_segment`'s `action` appears as "
    "`segment_action`), `attempts` and `duration_ms`."
)


class ExecutionOut(BaseModel):
    id: int
    organization_id: int
    automation_rule_id: int | None
    automation_rule_name: str
    trigger_event: Annotated[str, documented_as("TriggerEvent")]
    trigger_entity_type: Annotated[str, documented_as("EntityType")]
    trigger_entity_id: EntityIdField
    status: Annotated[str, documented_as("ExecutionStatus")]
    actions_executed: list[dict[str, Any]] = Field(
        description=ACTIONS_EXECUTED_DOC,
        json_schema_extra={
            "items": {
                "type": "object",
                "properties": {
                    "action": {"type": "string"},
                    "status": {COMPONENT_MARK: "ActionResultStatus"},
                },
                "required": ["action", "status"],
                "additionalProperties": True,
            }
        },
    )
    error_message: str | None
    executed_at: UTCDatetime
    rule_version: int
    finished_at: UTCDatetime | None
    event_id: int | None = Field(
        description="careflow's id of the event that triggered it (`GET /v1/events/{id}`); "
        "null for time-based triggers"
    )


def _result_fields(row: ExecutionAction) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (row.result or {}).items():
        if key not in _RESERVED:
            out[key] = value
    if row.error is not None:
        out["error"] = row.error
    return out


def action_entry(
    row: ExecutionAction, config: Mapping[str, Any] | None, *, detail: bool
) -> dict[str, Any]:
    entry: dict[str, Any] = {"action": row.type}
    if detail:
        entry["type"] = row.type
        for key, value in (config or {}).items():
            if key == "type":
                continue
            entry["segment_action" if key == "action" else key] = value
    entry["status"] = row.status
    entry.update(_result_fields(row))
    if detail:
        entry["attempts"] = row.attempts
        entry["duration_ms"] = row.duration_ms
    return entry


def execution_out(
    execution: Execution, rows: Sequence[ExecutionAction], *, detail: bool
) -> ExecutionOut:
    actions = execution.actions or []
    entries = [
        action_entry(
            row,
            actions[row.action_index] if row.action_index < len(actions) else None,
            detail=detail,
        )
        for row in rows
    ]
    return ExecutionOut(
        id=execution.id,
        organization_id=execution.organization_id,
        automation_rule_id=execution.automation_rule_id,
        automation_rule_name=execution.automation_rule_name,
        trigger_event=execution.trigger_event,
        trigger_entity_type=execution.trigger_entity_type,
        trigger_entity_id=execution.trigger_entity_id,
        status=execution.status,
        actions_executed=entries,
        error_message=execution.error_message,
        executed_at=execution.executed_at,
        rule_version=execution.rule_version,
        finished_at=execution.finished_at,
        event_id=execution.event_pk,
    )
