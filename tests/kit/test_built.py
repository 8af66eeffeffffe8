"""db.built: a row-built instance behaves like one from the constructor."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from sqlalchemy import inspect

from careflow.db import built
from careflow.executions.models import Execution

VALUES = {
    "id": 7,
    "organization_id": 1,
    "automation_rule_id": 2,
    "automation_rule_name": "Consent before booking",
    "rule_version": 1,
    "trigger_event": "appointment.created",
    "trigger_entity_type": "appointment",
    "trigger_entity_id": "5",
    "patient_id": "9",
    "occurrence_key": "appointment.created:5",
    "event_pk": 3,
    "status": "running",
    "actions": [{"type": "send_email", "template": "welcome"}],
    "context": {},
    "error_message": None,
    "executed_at": datetime(2026, 12, 1, tzinfo=UTC),
    "finished_at": None,
}


def test_built_holds_the_values_like_the_constructor() -> None:
    fast, slow = built(Execution, VALUES), Execution(**VALUES)
    for name in VALUES:
        assert getattr(fast, name) == getattr(slow, name)
    assert inspect(fast).transient and inspect(fast).session is None


def test_changes_to_a_built_instance_are_tracked() -> None:
    execution = built(Execution, VALUES)
    execution.status = "success"
    history = inspect(execution).attrs.status.history
    assert list(history.added) == ["success"]
    assert list(history.deleted) == ["running"]


def test_a_fresh_process_can_build_before_it_constructs() -> None:
    # The constructor configures the mappers on first use; a worker that only reads rows
    # never calls it, and an unconfigured mapper has no attribute to read the value through.
    script = (
        "from careflow.db import built\n"
        "from careflow.events.models import Event\n"
        "event = built(Event, {'id': 3, 'type': 'patient.onboarded'})\n"
        "print(event.id, event.type)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "patient.onboarded"]
