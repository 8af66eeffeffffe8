"""One patient's journey, for ``/console/patients/{id}``: every event, execution, message,
form and episode careflow holds for the patient in the caller's organisation, in time
order, and the patient's gate as it stands.

Events carry no patient column: a patient's events are the ones that started one of the
patient's executions or joined one of the patient's episodes. Each kind is read up to
``LIMIT`` rows (oldest first), and the page says when a kind reached it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from careflow.auth import Principal
from careflow.events import service as events
from careflow.executions import service as executions
from careflow.forms import service as forms
from careflow.forms.service import Gate
from careflow.kit.pagination import PageParams
from careflow.kit.types import EntityRef
from careflow.messages import service as messages
from careflow.messages.repository import MessageFilters
from careflow.pathways import episodes as pathways
from careflow.pathways.repository import EpisodeFilters

#: At most this many rows of each kind (and episodes whose events are read).
LIMIT = 100


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing that happened, with the page it links to."""

    at: datetime
    kind: str  # event, execution, message, form, form completed, episode
    title: str
    status: str | None
    href: str | None
    detail: str = ""


@dataclass
class Journey:
    patient_id: EntityRef
    gate: Gate
    entries: list[Entry]
    truncated: list[str] = field(default_factory=list)  # kinds that reached LIMIT


def _execution_href(execution_id: int | None, anchor: str = "") -> str | None:
    if execution_id is None:
        return None
    return f"/console/executions/{execution_id}{anchor}"


async def patient_journey(
    session: AsyncSession, principal: Principal, patient_id: EntityRef
) -> Journey:
    entries: list[Entry] = []
    truncated: list[str] = []
    page = PageParams(page=1, limit=LIMIT)

    runs = await executions.executions_of_patient(session, principal, patient_id, limit=LIMIT)
    if len(runs) >= LIMIT:
        truncated.append("executions")
    event_runs: dict[int, int] = {}
    for run in runs:
        if run.event_pk is not None:
            event_runs.setdefault(run.event_pk, run.id)
        entries.append(
            Entry(
                at=run.executed_at,
                kind="execution",
                title=f"{run.automation_rule_name} (#{run.id})",
                status=run.status,
                href=_execution_href(run.id),
                detail=run.trigger_event,
            )
        )

    sent, total = await messages.list_messages(
        session, principal, MessageFilters(patient_id=patient_id), page
    )
    if total > len(sent):
        truncated.append("messages")
    for message in sent:
        anchor = f"#action-{message.action_index}" if message.action_index is not None else ""
        entries.append(
            Entry(
                at=message.created_at,
                kind="message",
                title=f"{message.channel} {message.id} ({message.template})",
                status=message.status,
                href=_execution_href(message.execution_id, anchor),
            )
        )

    opened, total = await forms.list_forms(session, principal, page, patient_id=patient_id)
    if total > len(opened):
        truncated.append("forms")
    for form in opened:
        anchor = f"#action-{form.action_index}" if form.action_index is not None else ""
        href = _execution_href(form.execution_id, anchor)
        title = f"form {form.id} (template {form.form_template_id})"
        entries.append(
            Entry(
                at=form.created_at,
                kind="form",
                title=title,
                status=form.status,
                href=href,
                detail="blocking" if form.blocking else "",
            )
        )
        if form.completed_at is not None:
            entries.append(
                Entry(
                    at=form.completed_at,
                    kind="form completed",
                    title=title,
                    status="completed",
                    href=href,
                )
            )

    found, total = await pathways.list_episodes(
        session, principal, EpisodeFilters(patient_id=str(patient_id)), limit=LIMIT, offset=0
    )
    if total > len(found):
        truncated.append("episodes")
    event_episodes: dict[int, int] = {}
    for episode in found:
        entries.append(
            Entry(
                at=episode.created_at,
                kind="episode",
                title=f"episode {episode.id} ({episode.journey_type})",
                status=episode.status,
                href=f"/console/inbox/{episode.id}",
                detail=f"priority {episode.priority}",
            )
        )
        _, links = await pathways.get_episode_with_events(session, principal, str(episode.id))
        for link in links:
            event_episodes.setdefault(link.event_pk, episode.id)

    for event in await events.events_by_pk(
        session, principal, sorted(set(event_runs) | set(event_episodes))
    ):
        run_id = event_runs.get(event.id)
        href = (
            _execution_href(run_id, "#event")
            if run_id is not None
            else f"/console/inbox/{event_episodes[event.id]}"
        )
        entries.append(
            Entry(
                at=event.occurred_at,
                kind="event",
                title=f"{event.type} (#{event.id})",
                status=event.status,
                href=href,
                detail=f"received {event.created_at:%Y-%m-%d %H:%M:%S}",
            )
        )

    # Time order; at one instant, cause before effect.
    rank = {"event": 0, "episode": 1, "execution": 2, "form": 3, "message": 4}
    entries.sort(key=lambda e: (e.at, rank.get(e.kind, 5)))
    gate = await forms.patient_gate(session, principal, patient_id)
    return Journey(patient_id=patient_id, gate=gate, entries=entries, truncated=truncated)
