"""Prometheus metrics. Each process exposes its own registry at /metrics (scrape every process)."""

from __future__ import annotations

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
