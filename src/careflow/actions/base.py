"""The contract between the execution runner and one executor per action type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.config import Settings
from careflow.jobs.errors import DeferJob
from careflow.kit.clock import Clock
from careflow.kit.types import EntityRef

if TYPE_CHECKING:
    from careflow.messages.models import Message
    from careflow.templates.models import Template

ActionStatus = Literal["success", "failure", "skipped"]


class RetryableActionError(Exception):
    """A transient failure (SMTP timeout, provider 5xx): the runner retries with backoff."""

    def __init__(self, message: str, *, delay_seconds: float | None = None) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds


class PermanentActionError(Exception):
    """Retrying cannot help (a refused recipient, a template that fails to render)."""


class ProviderThrottled(DeferJob):
    """The provider of ``channel`` refused the send for rate: the action waits until
    ``until`` (shown ``throttled``) without counting an attempt, and so does the provider's
    rate limit."""

    def __init__(self, until: datetime, reason: str, *, channel: str) -> None:
        super().__init__(until, reason)
        self.channel = channel


class ReadsAhead(Protocol):
    """Rows a batch of steps read before any of them ran (``executions.prefetch``). Each
    answers (True, row or None) when it was read ahead, (False, None) when it was not."""

    def take_message(self, execution_id: int, action_index: int) -> tuple[bool, Message | None]:
        """The message an action has already produced, once."""
        ...

    def template(
        self, organization_id: int, key: str, channel: str
    ) -> tuple[bool, Template | None]:
        """The organisation's own template under ``key``."""
        ...

    def email_opted_out(self, organization_id: int, patient_id: EntityRef) -> tuple[bool, bool]:
        """Whether the patient unsubscribed from the organisation's emails through careflow."""
        ...

    def sms_opted_out(self, organization_id: int, patient_id: EntityRef) -> tuple[bool, bool]:
        """Whether an admin opted the patient out of the organisation's SMS in careflow."""
        ...

    async def phone_stopped(
        self, session: AsyncSession, organization_id: int, region: str, phone: str
    ) -> tuple[bool, bool]:
        """Whether the phone (E.164, the host's read in ``region``) texted STOP."""
        ...


@dataclass(slots=True)
class ActionContext:
    session: AsyncSession
    settings: Settings
    clock: Clock
    services: dict[str, Any]
    organization_id: int
    execution_id: int
    action_index: int
    config: Mapping[str, Any]  # the action as stored on the rule: {"type": ..., ...}
    patient_id: EntityRef | None
    context: Mapping[str, Any]  # fresh entity snapshots: {"patient": {...}, "appointment": {...}}
    attempt: int = 1
    is_last_attempt: bool = False
    trigger_event: str = ""
    # What the batch this step runs in read ahead for it, else None.
    reads: ReadsAhead | None = None


@dataclass(slots=True)
class ActionOutcome:
    status: ActionStatus
    # Fields merged into the action's entry in `actions_executed`: form_id, email_id, sms_id…
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    reason: str | None = None  # why it was skipped


class ActionExecutor(Protocol):
    type: str
    # True when the action only writes careflow's own rows (no email, SMS or HTTP call):
    # its jobs may then share a transaction with others (see jobs.registry.job_handler).
    database_only: bool
    # True when the executor writes its rows with one statement and raises
    # PermanentActionError or DeferJob only before that write: in a queued, non-final
    # attempt, where any other exception rolls the whole job back, the runner then runs
    # it without a savepoint, since there are no half-written rows to undo.
    single_write: bool

    async def execute(self, ctx: ActionContext) -> ActionOutcome:
        """Perform the side effect at most once per (execution, action index).

        Raise RetryableActionError for transient failures, PermanentActionError for final
        ones, or careflow.jobs.errors.DeferJob to run later without counting an attempt.
        """
        ...

    async def preview(
        self,
        session: AsyncSession,
        organization_id: int,
        config: Mapping[str, Any],
        context: Mapping[str, Any],
    ) -> dict[str, Any]:
        """What ``execute`` would do, with no side effect (the rule test endpoint)."""
        ...
