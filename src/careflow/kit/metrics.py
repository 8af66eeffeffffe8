"""Prometheus metrics. Each process exposes its own registry at /metrics (scrape every process)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_INGESTED = Counter(
    "careflow_events_ingested_total",
    "Events accepted by POST /v1/events",
    ["type"],
    registry=REGISTRY,
)
EXECUTIONS = Counter(
    "careflow_executions_total",
    "Executions finished, by final status",
    ["status"],
    registry=REGISTRY,
)
ACTIONS = Counter(
    "careflow_actions_total",
    "Actions finished, by type and status",
    ["type", "status"],
    registry=REGISTRY,
)
JOBS = Counter(
    "careflow_jobs_total",
    "Jobs run by this process, by kind and outcome",
    ["kind", "outcome"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "careflow_queue_depth",
    "Jobs by status, as last sampled by this process's worker",
    ["status"],
    registry=REGISTRY,
)
QUEUE_DUE = Gauge(
    "careflow_queue_due_jobs",
    "Queued jobs due now, for the organisations with the most, and one 'other' series",
    ["organization"],
    registry=REGISTRY,
)
QUEUE_OLDEST_DUE = Gauge(
    "careflow_queue_oldest_due_seconds",
    "Age of the oldest queued job due now (now - run_at), by organisation as the depth",
    ["organization"],
    registry=REGISTRY,
)
JOB_LAG = Histogram(
    "careflow_job_lag_seconds",
    "Seconds between a job's run_at and the moment a worker claimed it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "careflow_http_request_duration_seconds",
    "HTTP request duration by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)


@dataclass(frozen=True, slots=True)
class OrganizationBacklog:
    """An organisation's due queued jobs (``organization_id`` None: jobs of none)."""

    organization_id: int | None
    due: int
    oldest_run_at: datetime


def set_organization_backlogs(
    backlogs: Iterable[OrganizationBacklog], *, now: datetime, top: int
) -> None:
    """The per-organisation gauges from one grouped read: the ``top`` organisations by due
    jobs get a series each (``organization`` = their id, ``none`` for jobs of none), the
    rest one ``other`` series (their sum, and their oldest), so the series stay at most
    ``top + 1`` however many organisations there are. The series of an organisation that
    left the top go away."""
    ranked = sorted(backlogs, key=lambda b: (-b.due, b.oldest_run_at))
    shown, rest = ranked[:top], ranked[top:]
    QUEUE_DUE.clear()
    QUEUE_OLDEST_DUE.clear()
    for backlog in shown:
        label = "none" if backlog.organization_id is None else str(backlog.organization_id)
        QUEUE_DUE.labels(label).set(backlog.due)
        QUEUE_OLDEST_DUE.labels(label).set(_age(now, backlog.oldest_run_at))
    QUEUE_DUE.labels("other").set(sum(b.due for b in rest))
    oldest = min((b.oldest_run_at for b in rest), default=None)
    QUEUE_OLDEST_DUE.labels("other").set(0.0 if oldest is None else _age(now, oldest))


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, (now - then).total_seconds())
