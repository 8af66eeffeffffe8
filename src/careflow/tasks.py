"""Imports every module that registers job handlers, so a worker knows every kind."""

from __future__ import annotations

import importlib

TASK_MODULES = (
    "careflow.jobs.builtin",
    "careflow.events.tasks",
    "careflow.executions.tasks",
    "careflow.scheduling.tasks",
)


def load_all() -> None:
    for name in TASK_MODULES:
        importlib.import_module(name)
