"""Rule bodies and a helper that creates rules through the API, as a client would."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import httpx

from careflow import examples

RULES = "/v1/automations/rules"

# The two rules of the Automations API reference (seed 000), as a client sends them.
SEED_GDPR_WELCOME: dict[str, Any] = examples.GDPR_WELCOME
SEED_FIRST_VIDEO: dict[str, Any] = examples.FIRST_VIDEO


def rule_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Welcome",
        "trigger_event": "patient.onboarded",
        "actions": [{"type": "send_email", "template": "welcome_patient"}],
    }
    body.update(copy.deepcopy(overrides))
    return body


async def create_rule(
    client: httpx.AsyncClient,
    auth: Callable[..., dict[str, str]],
    org: int = 1,
    **overrides: Any,
) -> dict[str, Any]:
    r = await client.post(RULES, json=rule_body(**overrides), headers=auth("admin", org=org))
    assert r.status_code == 201, r.text
    return r.json()["data"]  # type: ignore[no-any-return]
