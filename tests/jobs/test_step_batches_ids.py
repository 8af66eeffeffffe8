"""A batch of dispatches inserts its executions, forms and episodes once per table, with ids
drawn ahead from the sequences (PostgreSQL), and ends with the rows a dispatch alone writes.

On SQLite each INSERT still runs at once and returns its id: the same tests check that the
rows come out the same there.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from careflow.config import Settings
from careflow.db import create_sessionmaker
from careflow.events.models import Event
from careflow.executions.models import Execution, ExecutionAction
from careflow.executions.repository import insert_execution
from careflow.forms import repository as forms_repository
from careflow.forms.models import Form
from careflow.jobs import held_writes
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from careflow.pathways.models import Episode, EpisodeEvent
from tests.fixtures.database import count
from tests.fixtures.factories import E2E_RULE, PATIENT, create_rule, onboarded, post_event
from tests.fixtures.smtp import SmtpServer

Auth = Callable[..., dict[str, str]]

FORM_ONLY_RULE: dict[str, Any] = {
    **E2E_RULE,
    "name": "Consent only",
    "actions": [{"type": "require_form", "form_template_id": 10, "blocking": True}],
}


def _worker(app: FastAPI, settings: Settings, clock: FrozenClock) -> Worker:
    return Worker(app.state.sessionmaker, settings, clock, services=app.state.services)


@contextmanager
def _statements(engine: AsyncEngine) -> Iterator[list[str]]:
    seen: list[str] = []

    def listener(_c: Any, _cu: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()).upper())

    event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", listener)


def _writes(statements: list[str]) -> Counter[str]:
    """INSERT INTO t / UPDATE t, counted by table."""
    out: Counter[str] = Counter()
    for s in statements:
        found = re.match(r"(INSERT INTO|UPDATE) (\w+)", s)
        if found:
            out[f"{found.group(1)} {found.group(2)}"] += 1
    return out


async def _dispatch_batch(
    client: httpx.AsyncClient, auth: Auth, worker: Worker, patients: list[int]
) -> None:
    for patient_id in patients:
        patient = {**PATIENT, "id": patient_id, "email": f"p{patient_id}@example.com"}
        await post_event(client, auth, "patient.onboarded", onboarded(patient))
    dispatches = await worker.claim(100)
    assert len(dispatches) == len(patients)
    assert await worker.run_batch(dispatches) == ["done"] * len(patients)


async def _form_results(engine: AsyncEngine) -> dict[int, dict[str, Any]]:
    """The require_form result of each execution, by execution id."""
    async with create_sessionmaker(engine)() as session:
        rows = await session.execute(
            select(ExecutionAction.execution_id, ExecutionAction.result).where(
                ExecutionAction.type == "require_form"
            )
        )
        return {execution_id: result for execution_id, result in rows}


async def test_a_batch_inserts_each_table_once_with_ids_drawn_ahead(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    worker = _worker(app, settings, clock)
    await create_rule(client, auth, E2E_RULE)
    patients = [700 + i for i in range(6)]
    with _statements(engine) as statements:
        await _dispatch_batch(client, auth, worker, patients)

    writes = _writes(statements)
    if engine.dialect.name == "postgresql":
        # One block of ids for the three tables, one INSERT of each for all six events.
        assert len([s for s in statements if "NEXTVAL" in s]) == 1, statements
        for table in ("EXECUTIONS", "FORMS", "EPISODES"):
            assert writes[f"INSERT INTO {table}"] == 1, writes
    else:
        for table in ("EXECUTIONS", "FORMS", "EPISODES"):
            assert writes[f"INSERT INTO {table}"] == 6, writes

    # The rows point at each other as a dispatch alone leaves them.
    async with create_sessionmaker(engine)() as session:
        executions = {e.id: e for e in await session.scalars(select(Execution))}
        forms = list(await session.scalars(select(Form)))
        events = list(await session.scalars(select(Event)))
        links = {
            link.event_pk: link.episode_id for link in await session.scalars(select(EpisodeEvent))
        }
        episodes = {e.id: e for e in await session.scalars(select(Episode))}
    assert sorted(str(e.patient_id) for e in executions.values()) == [str(p) for p in patients]
    assert {e.status for e in executions.values()} == {"running"}  # the email is queued
    results = await _form_results(engine)
    assert len(forms) == 6
    for form in forms:
        execution = executions[form.execution_id]
        assert (form.patient_id, form.action_index) == (execution.patient_id, 0)
        assert results[execution.id] == {"form_id": form.id}
    for ev in events:
        assert ev.status == "processed"
        assert ev.episode_id == links[ev.id]
        assert episodes[ev.episode_id].patient_id == ev.data["patient"]["id"]

    # The batch's email steps find everything they need, and each execution succeeds.
    sends = await worker.claim(100)
    assert {job.payload["execution_id"] for job in sends} == set(executions)
    assert await worker.run_batch(sends) == ["done"] * 6
    assert await count(engine, Execution, Execution.status == "success") == 6
    assert len(smtp.sink.messages) == 6


async def test_forms_pending_before_the_batch_and_opened_in_it_are_reused(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    worker = _worker(app, settings, clock)
    await create_rule(client, auth, FORM_ONLY_RULE)
    await _dispatch_batch(client, auth, worker, [700])
    [earlier] = list((await _form_results(engine)).values())

    # Patient 700 has the form pending already; patient 701 gets it in the batch, twice.
    with _statements(engine) as statements:
        await _dispatch_batch(client, auth, worker, [700, 701, 701])

    async with create_sessionmaker(engine)() as session:
        forms = {(f.patient_id, f.id) for f in await session.scalars(select(Form))}
        executions = {e.id: e for e in await session.scalars(select(Execution))}
    assert len(forms) == 2  # one pending form per patient and template, as alone
    [form_701] = [form_id for patient, form_id in forms if patient == 701]
    results = await _form_results(engine)
    by_patient: dict[Any, list[dict[str, Any]]] = {}
    for execution_id in sorted(results):
        by_patient.setdefault(executions[execution_id].patient_id, []).append(results[execution_id])
    assert by_patient[700] == [earlier, {"form_id": earlier["form_id"], "reused": True}]
    assert by_patient[701] == [{"form_id": form_701}, {"form_id": form_701, "reused": True}]
    # Every execution finished inside its batch: the outcome went into the held INSERT, and
    # the second event of 701's journey joined the episode the first opened in the batch.
    assert {e.status for e in executions.values()} == {"success"}
    assert all(e.finished_at is not None for e in executions.values())
    assert await count(engine, Episode) == 2
    if engine.dialect.name == "postgresql":
        writes = _writes(statements)
        assert writes["INSERT INTO FORMS"] == 1 and writes["INSERT INTO EXECUTIONS"] == 1, writes
        assert writes["UPDATE EXECUTIONS"] == 0, writes
        # 701's episode, opened in the batch, got its second event's time in its INSERT;
        # 700's, opened by the earlier batch, one held UPDATE.
        assert writes["UPDATE EPISODES"] == 1, writes
        assert writes["INSERT INTO EPISODES"] == 1, writes


async def test_a_held_insert_the_database_refuses_reruns_each_dispatch_alone(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
) -> None:
    worker = _worker(app, settings, clock)
    rule = await create_rule(client, auth, FORM_ONLY_RULE)
    for patient_id in (700, 701, 702):
        patient = {**PATIENT, "id": patient_id}
        await post_event(client, auth, "patient.onboarded", onboarded(patient))
    # An execution of 701's occurrence written around the engine (by hand, say): the batch
    # cannot know it is there, and the unique index refuses its INSERT at the batch's end.
    async with create_sessionmaker(engine)() as session, session.begin():
        [pk] = (
            await session.scalars(
                select(Event.id).where(Event.data["patient"]["id"].as_integer() == 701)
            )
        ).all()
        now = datetime(2025, 1, 1, tzinfo=UTC)
        await session.execute(
            insert(Execution).values(
                organization_id=1,
                automation_rule_id=rule["id"],
                automation_rule_name=rule["name"],
                rule_version=rule["version"],
                trigger_event="patient.onboarded",
                trigger_entity_type="patient",
                trigger_entity_id=701,
                patient_id=701,
                occurrence_key=f"event:{pk}:patient.onboarded",
                event_pk=pk,
                status="success",
                actions=[],
                context={},
                executed_at=now,
                finished_at=now,
            )
        )
    dispatches = await worker.claim(100)
    with capture_logs() as logs:
        assert await worker.run_batch(dispatches) == ["done"] * 3

    split = [entry for entry in logs if entry["event"] == "jobs.batch_split"]
    assert len(split) == (1 if engine.dialect.name == "postgresql" else 0), split
    # Alone, 701's dispatch found its execution and started nothing: nothing is doubled and
    # nothing lost.
    assert await count(engine, Execution) == 3
    assert await count(engine, Form) == 2
    assert await count(engine, Event, Event.status == "processed") == 3
    assert await count(engine, EpisodeEvent) == 3


async def test_a_form_for_a_patient_not_read_ahead_sends_its_execution_first(
    client: httpx.AsyncClient, auth: Auth, clock: FrozenClock, engine: AsyncEngine
) -> None:
    rule = await create_rule(client, auth, FORM_ONLY_RULE)
    now = clock.now()
    async with create_sessionmaker(engine)() as session, session.begin():
        held_writes.install(session)
        execution = await insert_execution(
            session,
            {
                "organization_id": 1,
                "automation_rule_id": rule["id"],
                "automation_rule_name": rule["name"],
                "rule_version": rule["version"],
                "trigger_event": "patient.onboarded",
                "trigger_entity_type": "patient",
                "trigger_entity_id": 700,
                "patient_id": 700,
                "occurrence_key": "by-hand",
                "event_pk": None,
                "status": "running",
                "actions": FORM_ONLY_RULE["actions"],
                "context": {},
                "error_message": None,
                "executed_at": now,
                "finished_at": None,
            },
            hold=True,
        )
        assert execution is not None
        # No read_pending for patient 700: the form is one INSERT now, which needs the
        # execution's row (held on PostgreSQL) to be there first.
        opened = await forms_repository.open_pending(
            session,
            organization_id=1,
            patient_id=700,
            form_template_id=10,
            blocking=True,
            description=None,
            execution_id=execution.id,
            action_index=0,
            now=now,
        )
        assert opened is not None and opened[1] is False
    async with create_sessionmaker(engine)() as session:
        [form] = list(await session.scalars(select(Form)))
    assert (form.id, form.execution_id) == (opened[0], execution.id)


EMAIL_THEN_FORM: dict[str, Any] = {
    **E2E_RULE,
    "name": "Email, then the form",
    "actions": [
        {"type": "send_email", "template": "welcome_patient"},
        {"type": "require_form", "form_template_id": 10, "blocking": True},
    ],
}


@pytest.mark.parametrize("step_first", [True, False])
async def test_a_queued_form_step_and_a_dispatch_of_one_patient_share_a_batch(
    client: httpx.AsyncClient,
    auth: Auth,
    app: FastAPI,
    settings: Settings,
    clock: FrozenClock,
    smtp: SmtpServer,
    engine: AsyncEngine,
    step_first: bool,
) -> None:
    # A queued require_form step (its execution started in an earlier batch) and a
    # dispatch whose rule opens the same form, for one patient, in one batch: the step's
    # INSERT must see the form the dispatch holds, and the dispatch the one the step opened.
    worker = _worker(app, settings, clock)
    await create_rule(client, auth, EMAIL_THEN_FORM)
    await post_event(client, auth, "patient.onboarded", onboarded(PATIENT))
    for _ in range(2):  # the dispatch, then the email, which queues the form step
        jobs = await worker.claim(100)
        assert await worker.run_batch(jobs) == ["done"] * len(jobs)
    await create_rule(client, auth, FORM_ONLY_RULE)
    await post_event(client, auth, "patient.onboarded", onboarded(PATIENT))
    jobs = await worker.claim(100)
    assert sorted(job.kind for job in jobs) == ["dispatch_event", "run_action"]
    jobs.sort(key=lambda job: (job.kind == "run_action") != step_first)

    with capture_logs() as logs:
        assert await worker.run_batch(jobs) == ["done", "done"]

    assert not [entry for entry in logs if entry["event"] == "jobs.batch_split"]
    assert await count(engine, Form) == 1
    [form_id] = {result["form_id"] for result in (await _form_results(engine)).values()}
    reused = [r.get("reused", False) for r in (await _form_results(engine)).values()]
    assert sorted(reused) == [False, True]
    assert form_id is not None
