"""Plain-function factories for pathway tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

RULES = "/v1/pathway-rules"
AuthFn = Callable[..., dict[str, str]]


def rule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "trigger_type": "appointment.booked",
        "rule_name": "VIP bookings → urgent priority",
        "priority": 0,
        "conditions": {"appointment_type_ids": ["type_vip_consultation"]},
        "suggested_assignment": "usr_team_lead",
        "suggested_priority": "urgent",
    }
    body.update(overrides)
    return body


async def create_rule(
    client: httpx.AsyncClient, auth: AuthFn, org: int = 1, **overrides: Any
) -> dict[str, Any]:
    r = await client.post(RULES, json=rule_body(**overrides), headers=auth("admin", org=org))
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


def assert_pathway_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The pathway error envelope: UPPER code, details, and meta.request_id."""
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"error", "meta"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert "details" in body["error"]
    assert body["meta"]["request_id"] == r.headers["x-request-id"]
    return body


def error_fields(r: httpx.Response) -> set[str]:
    return {d["field"] for d in r.json()["error"]["details"]}
