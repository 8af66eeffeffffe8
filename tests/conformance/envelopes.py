"""What the API references promise every answer looks like, as predicates over responses.

Two envelope families: the Automations API (``{"error": {code, message, details}}``, lists
``{data, meta: {total, page, limit}}``) and the Pathway Rules API (``{"error": …, "meta":
{"request_id"}}``, lists ``{data, meta: {total, limit, offset, request_id}}``). Every answer
carries ``X-Request-ID``; every ``*_at`` value is ISO 8601 UTC ending in ``Z``. ``poll`` is the
only way these tests wait: a condition, an interval and a deadline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

TS_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
REQ_ID = re.compile(r"^req_[A-Za-z0-9]+")
RULE_ID = re.compile(r"^rule_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

T = TypeVar("T")


def body(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def data(r: httpx.Response) -> Any:
    """The ``data`` member of a JSON object answer ({} when there is none)."""
    b = body(r)
    return (b.get("data") if isinstance(b, dict) else None) or {}


def describe(r: httpx.Response) -> str:
    return f"{r.status_code} {r.text[:300]}"


def timestamps_not_z(obj: Any) -> list[str]:
    """Every ``*_at`` string value that is not ISO 8601 UTC with a Z."""
    bad: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.endswith("_at") and isinstance(v, str) and not TS_Z.match(v):
                bad.append(f"{k}={v}")
            bad.extend(timestamps_not_z(v))
    elif isinstance(obj, list):
        for v in obj:
            bad.extend(timestamps_not_z(v))
    return bad


def auto_error(r: httpx.Response, status: int, code: str) -> bool:
    """An Automations API error: exactly ``{"error": {code, message, details}}`` + X-Request-ID."""
    b = body(r)
    return (
        r.status_code == status
        and isinstance(b, dict)
        and set(b) == {"error"}
        and isinstance(b["error"], dict)
        and b["error"].get("code") == code
        and isinstance(b["error"].get("message"), str)
        and "details" in b["error"]
        and bool(r.headers.get("x-request-id"))
    )


def pathway_error(r: httpx.Response, status: int, code: str) -> bool:
    """A Pathway Rules API error: ``{"error": {…}, "meta": {"request_id": "req_…"}}``."""
    b = body(r)
    return bool(
        r.status_code == status
        and isinstance(b, dict)
        and set(b) == {"error", "meta"}
        and b["error"].get("code") == code
        and isinstance(b["error"].get("message"), str)
        and "details" in b["error"]
        and REQ_ID.match(str((b.get("meta") or {}).get("request_id", "")))
        and bool(r.headers.get("x-request-id"))
    )


def error_fields(r: httpx.Response) -> list[str]:
    """The ``field`` of each entry of an error's ``details``."""
    details = ((body(r) or {}).get("error") or {}).get("details") or []
    return [str(x.get("field")) for x in details if isinstance(x, dict)]


def page_meta_ok(b: Any, page: int = 1, limit: int = 20) -> bool:
    return (
        isinstance(b, dict)
        and set(b) == {"data", "meta"}
        and isinstance(b["data"], list)
        and set(b["meta"]) == {"total", "page", "limit"}
        and b["meta"]["page"] == page
        and b["meta"]["limit"] == limit
        and isinstance(b["meta"]["total"], int)
    )


def offset_meta_ok(b: Any, limit: int = 20, offset: int = 0) -> bool:
    return (
        isinstance(b, dict)
        and set(b) == {"data", "meta"}
        and isinstance(b["data"], list)
        and set(b["meta"]) == {"total", "limit", "offset", "request_id"}
        and b["meta"]["limit"] == limit
        and b["meta"]["offset"] == offset
        and bool(REQ_ID.match(str(b["meta"]["request_id"])))
    )


def poll(fn: Callable[[], T], timeout: float, interval: float = 0.25) -> T:
    """Call ``fn`` until it returns something truthy or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        last = fn()
        if last or time.monotonic() >= deadline:
            return last
        time.sleep(interval)
