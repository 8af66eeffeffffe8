"""The modules that register job handlers; a worker imports each (jobs.worker.load_handlers)."""

from __future__ import annotations

TASK_MODULES = (
    "careflow.jobs.builtin",
    "careflow.events.tasks",
    "careflow.executions.tasks",
    "careflow.scheduling.tasks",
)
