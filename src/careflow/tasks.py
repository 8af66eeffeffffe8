"""The modules that register job handlers: importing this module registers every job kind
(``app.py`` and ``worker_process.py`` do, before any worker runs)."""

from __future__ import annotations

from careflow.events import tasks as events_tasks
from careflow.executions import tasks as executions_tasks
from careflow.jobs import builtin
from careflow.providers import tasks as providers_tasks
from careflow.scheduling import tasks as scheduling_tasks

__all__ = [
    "builtin",
    "events_tasks",
    "executions_tasks",
    "providers_tasks",
    "scheduling_tasks",
]
