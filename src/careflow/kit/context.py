"""Request-scoped values that logs, audit entries, error envelopes and enqueued jobs read."""

from __future__ import annotations

import secrets
from contextvars import ContextVar
from dataclasses import dataclass

from careflow import tracing

request_id_var: ContextVar[str | None] = ContextVar("careflow_request_id", default=None)
#: Where the request came from when not the API: ``"console"`` while a console page is served
#: (its audit entries say so).
via_var: ContextVar[str | None] = ContextVar("careflow_via", default=None)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def current_request_id() -> str | None:
    return request_id_var.get()


def current_via() -> str | None:
    return via_var.get()


@dataclass(frozen=True, slots=True)
class Origin:
    """What a job keeps of the work that enqueued it: the request's id, and the span to
    continue the trace from (None while tracing is off)."""

    request_id: str | None
    traceparent: str | None


def current_origin() -> Origin:
    """The origin of a job enqueued here and now: the request being served, or the job
    being run (whose request id and span the worker has made current)."""
    return Origin(request_id_var.get(), tracing.current_traceparent())
