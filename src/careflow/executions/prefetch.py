"""``run_action``'s prefetch: the reads of a batch of action steps, done once for the batch.

A step alone reads its execution, the execution's results, the entities' snapshots, the
message its action may already have sent, the template it sends and, for an email, whether
its patient unsubscribed: five or six statements. A batch of steps that share a transaction
reads each of those once, for every step in it, before any step runs. Each step then takes
what it needs from here, and reads for itself anything it does not find (what an earlier
step of the batch may have changed).

The batch's rate limits are taken here too, one statement per bucket for the whole batch
(``ratelimits.service.admit``): the steps that got no token are kept in ``StepReads.held``,
and the runner defers each of them as ``throttled``.

Whether an SMS step's phone texted STOP is read on the batch's first SMS step of each
organisation, for all of them: a phone is compared in E.164, and reading the host's phones
in E.164 takes the organisation's region, which that step has at hand.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.entities.context import SnapshotReads, read_snapshots
from careflow.executions import repository
from careflow.executions.models import Execution, ExecutionAction
from careflow.jobs.prefetch import PrefetchContext
from careflow.kit.phones import to_e164
from careflow.kit.types import EntityRef, canonical_entity_id
from careflow.messages import repository as messages_repository
from careflow.messages.models import Message
from careflow.patients import service as patients
from careflow.ratelimits import service as ratelimits
from careflow.templates import repository as templates_repository
from careflow.templates.models import Template

# The channel of each action type that sends a message.
MESSAGE_CHANNELS = {"send_email": "email", "send_sms": "sms"}
# A step whose result is one of these has run: a redelivered job, which takes no token.
_FINISHED = frozenset({"success", "failure", "skipped"})


@dataclass(slots=True)
class StepReads:
    """One batch's reads. Executions and results are taken once: a second step of the same
    execution in the batch reads them again, after the first step's writes."""

    executions: dict[int, Execution] = field(default_factory=dict)
    results: dict[int, list[ExecutionAction]] = field(default_factory=dict)
    snapshots: dict[int, SnapshotReads] = field(default_factory=dict)  # by organisation
    messages: dict[tuple[int, int], Message | None] = field(default_factory=dict)
    templates: dict[tuple[int, str, str], Template | None] = field(default_factory=dict)
    # The patients of the batch's email steps, and which of them unsubscribed.
    email_patients: set[tuple[int, EntityRef]] = field(default_factory=set)
    email_opt_outs: set[tuple[int, EntityRef]] = field(default_factory=set)
    # The patients of the batch's SMS steps and which of them opted out through careflow;
    # their phones as the host wrote them, by organisation, and by (organisation, region)
    # which of those phones (E.164) texted STOP, once a step of the organisation asked.
    sms_patients: set[tuple[int, EntityRef]] = field(default_factory=set)
    sms_opt_outs: set[tuple[int, EntityRef]] = field(default_factory=set)
    sms_phones: dict[int, set[str]] = field(default_factory=dict)
    stopped_phones: dict[tuple[int, str], tuple[set[str], set[str]]] = field(default_factory=dict)
    # The steps a rate limit holds back, by (execution id, action index).
    held: dict[tuple[int, int], ratelimits.Held] = field(default_factory=dict)
    # The worker's services, where the rate limits keep the tokens given and not yet spent.
    services: MutableMapping[str, Any] | None = None

    def held_back(self, execution_id: int, action_index: int) -> ratelimits.Held | None:
        """Why and until when a rate limit holds the step back, or None if it may run; asked
        once, as the step runs (its token, if it got one, is then spent)."""
        if self.services is not None:
            ratelimits.ran(self.services, execution_id, action_index)
        return self.held.pop((execution_id, action_index), None)

    def take(self, execution_id: int) -> tuple[Execution, list[ExecutionAction]] | None:
        """The execution (locked) and its results, or None if not read here or taken."""
        execution = self.executions.pop(execution_id, None)
        if execution is None:
            return None
        return execution, self.results.pop(execution_id, [])

    def snapshots_of(self, organization_id: int) -> SnapshotReads:
        return self.snapshots.setdefault(organization_id, {})

    def take_message(self, execution_id: int, action_index: int) -> tuple[bool, Message | None]:
        """(True, the action's message or None) if read here; (False, None) if not."""
        key = (execution_id, action_index)
        if key not in self.messages:
            return False, None
        return True, self.messages.pop(key)

    def template(
        self, organization_id: int, key: str, channel: str
    ) -> tuple[bool, Template | None]:
        """(True, the organisation's own template or None) if read here; (False, None) if not."""
        found = (organization_id, key, channel)
        if found not in self.templates:
            return False, None
        return True, self.templates[found]

    def email_opted_out(self, organization_id: int, patient_id: EntityRef) -> tuple[bool, bool]:
        """(True, whether the patient unsubscribed) if read here; (False, False) if not."""
        key = (organization_id, patient_id)
        if key not in self.email_patients:
            return False, False
        return True, key in self.email_opt_outs

    def sms_opted_out(self, organization_id: int, patient_id: EntityRef) -> tuple[bool, bool]:
        """(True, whether an admin opted the patient out of SMS) if read here; else (False,
        False)."""
        key = (organization_id, patient_id)
        if key not in self.sms_patients:
            return False, False
        return True, key in self.sms_opt_outs

    async def phone_stopped(
        self, session: AsyncSession, organization_id: int, region: str, phone: str
    ) -> tuple[bool, bool]:
        """(True, whether ``phone`` texted STOP) when it is one of the batch's phones; the
        first ask for an organisation reads all of them at once. (False, False) otherwise."""
        key = (organization_id, region)
        if key not in self.stopped_phones:
            candidates = {
                number
                for raw in self.sms_phones.get(organization_id, ())
                if (number := to_e164(raw, region)) is not None
            }
            stopped = await patients.phones_opted_out_among(
                session, organization_id, sorted(candidates)
            )
            self.stopped_phones[key] = (candidates, stopped)
        candidates, stopped = self.stopped_phones[key]
        if phone not in candidates:
            return False, False
        return True, phone in stopped


def _execution_ids(payloads: Sequence[Mapping[str, Any]]) -> list[int]:
    ids: set[int] = set()
    for payload in payloads:
        try:
            ids.add(int(payload["execution_id"]))
        except (KeyError, TypeError, ValueError):
            continue  # the handler refuses it
    return sorted(ids)


async def prefetch_steps(
    session: AsyncSession, payloads: Sequence[Mapping[str, Any]], context: PrefetchContext
) -> StepReads:
    """The reads of ``payloads``' steps (``run_action`` jobs), one statement per table, and
    their rate limits' tokens."""
    reads = StepReads()
    executions = await repository.get_many_for_run(session, _execution_ids(payloads))
    if not executions:
        return reads
    reads.executions = {execution.id: execution for execution in executions}
    reads.results = await repository.actions_of(session, list(reads.executions))

    # What runner.fresh_context joins: the entities stored in the execution's context.
    reads.snapshots = await read_snapshots(
        session, ((e.organization_id, e.context or {}) for e in executions)
    )

    message_keys: list[tuple[int, int]] = []
    template_keys: set[tuple[int, str, str]] = set()
    steps: list[tuple[Execution, int, str | None]] = []
    for payload in payloads:
        try:
            step = reads.executions.get(int(payload["execution_id"]))
            index = int(payload["action_index"])
        except (KeyError, TypeError, ValueError):
            continue
        if step is None or not 0 <= index < len(step.actions or []):
            continue
        action = (step.actions or [])[index]
        channel = MESSAGE_CHANNELS.get(str(action.get("type")))
        steps.append((step, index, channel))
        if channel is None:
            continue
        message_keys.append((step.id, index))
        if channel == "email" and step.patient_id is not None:
            reads.email_patients.add((step.organization_id, step.patient_id))
        if channel == "sms" and step.patient_id is not None:
            reads.sms_patients.add((step.organization_id, step.patient_id))
            snapshot = reads.snapshots_of(step.organization_id).get(
                ("patient", canonical_entity_id(step.patient_id))
            )
            phone = snapshot.get("phone") if snapshot is not None else None
            if isinstance(phone, str) and phone.strip():
                reads.sms_phones.setdefault(step.organization_id, set()).add(phone.strip())
        if isinstance(action.get("template"), str):
            template_keys.add((step.organization_id, action["template"], channel))
    reads.messages = await messages_repository.get_for_actions(session, message_keys)
    reads.templates = await templates_repository.find_many(session, sorted(template_keys))
    reads.email_opt_outs = await patients.opted_out_among(
        session, patients.EMAIL, sorted(reads.email_patients, key=str)
    )
    reads.sms_opt_outs = await patients.opted_out_among(
        session, patients.SMS, sorted(reads.sms_patients, key=str)
    )
    reads.services = context.services
    reads.held = await ratelimits.admit(
        session,
        context.settings,
        context.clock.now(),
        context.services,
        _limited_steps(reads, steps),
    )
    return reads


def _limited_steps(
    reads: StepReads, steps: Sequence[tuple[Execution, int, str | None]]
) -> list[ratelimits.Step]:
    """The batch's steps still to run, as the rate limits count them: a message already
    sent takes no provider token, a step that has run (a redelivered job) none at all."""
    limited: list[ratelimits.Step] = []
    for execution, index, channel in steps:
        if execution.status != "running":
            continue
        if any(
            row.action_index == index and row.status in _FINISHED
            for row in reads.results.get(execution.id, ())
        ):
            continue
        message = reads.messages.get((execution.id, index))
        sends = channel is not None and (message is None or message.provider_message_id is None)
        limited.append(
            ratelimits.Step(
                execution.id, index, execution.organization_id, channel if sends else None
            )
        )
    return limited
