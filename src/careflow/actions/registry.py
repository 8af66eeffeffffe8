"""Action type → executor. Adding an action type is one new module and one entry here
(plus its entry in the automations catalog, which validates rules against it)."""

from __future__ import annotations

from careflow.actions.base import ActionExecutor
from careflow.actions.require_form import RequireFormExecutor
from careflow.actions.send_email import SendEmailExecutor
from careflow.actions.send_sms import SendSmsExecutor
from careflow.actions.update_segment import UpdateSegmentExecutor

EXECUTORS: dict[str, ActionExecutor] = {
    executor.type: executor
    for executor in (
        RequireFormExecutor(),
        SendEmailExecutor(),
        SendSmsExecutor(),
        UpdateSegmentExecutor(),
    )
}


def is_database_only(action_type: object) -> bool:
    """Whether the action only writes careflow's own rows; False for an unknown type."""
    executor = EXECUTORS.get(str(action_type))
    return executor is not None and executor.database_only
