"""The access matrix (seed 000 and 001, SPEC §2): every allowed role gets past the role check,
every other role is answered 403 with its family's code.

Paths name the world's objects; a request that passes the role check may still be a 400 or
404, which is not this module's concern.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.envelopes import body
from tests.conformance.seed import ROLES
from tests.conformance.server import Api

AUTO_STAFF = {"admin", "specialist"}
ADMIN = {"admin"}
INGEST = {"admin", "service"}
FORMS_READ = {"admin", "specialist", "service"}

MATRIX: list[tuple[str, str, set[str], Any]] = [
    ("GET", "/v1/automations/rules", AUTO_STAFF, None),
    ("GET", "/v1/automations/rules/{rule_id}", AUTO_STAFF, None),
    ("POST", "/v1/automations/rules", ADMIN, {}),
    ("PUT", "/v1/automations/rules/{rule_id}", ADMIN, {}),
    ("DELETE", "/v1/automations/rules/999999", ADMIN, None),
    ("POST", "/v1/automations/rules/{rule_id}/test", ADMIN, {}),
    ("GET", "/v1/automations/executions", AUTO_STAFF, None),
    ("GET", "/v1/automations/executions/{execution_id}", AUTO_STAFF, None),
    ("POST", "/v1/automations/executions/999999/retry", ADMIN, None),
    ("GET", "/v1/automations/triggers", AUTO_STAFF, None),
    ("GET", "/v1/automations/actions", AUTO_STAFF, None),
    ("GET", "/v1/pathway-rules", AUTO_STAFF, None),
    ("GET", "/v1/pathway-rules/{pathway_rule_id}", AUTO_STAFF, None),
    ("POST", "/v1/pathway-rules", ADMIN, {}),
    ("PATCH", "/v1/pathway-rules/{pathway_rule_id}", ADMIN, {}),
    ("DELETE", "/v1/pathway-rules/rule_00000000-0000-0000-0000-000000000000", ADMIN, None),
    ("POST", "/v1/pathway-rules/resolve", AUTO_STAFF, {}),
    ("GET", "/v1/pathway-configs", AUTO_STAFF, None),
    ("GET", "/v1/pathway-configs/appointment.booked", AUTO_STAFF, None),
    ("PUT", "/v1/pathway-configs/appointment.booked", ADMIN, {}),
    ("GET", "/v1/pathway-triggers", AUTO_STAFF, None),
    ("POST", "/v1/events", INGEST, {}),
    ("PUT", "/v1/entities/patient/555", INGEST, {"id": 555}),
    ("GET", "/v1/forms", FORMS_READ, None),
    ("GET", "/v1/forms/{form_id}", FORMS_READ, None),
    ("POST", "/v1/forms/999999/complete", INGEST, None),
    ("GET", "/v1/patients/100/gate", FORMS_READ, None),
    ("GET", "/v1/episodes", AUTO_STAFF, None),
    ("GET", "/v1/episodes/{episode_id}", AUTO_STAFF, None),
    ("PATCH", "/v1/episodes/{episode_id}", AUTO_STAFF, {}),
    ("GET", "/v1/messages", AUTO_STAFF, None),
    ("GET", "/v1/messages/{message_id}", AUTO_STAFF, None),
    ("GET", "/v1/segments/7/members", AUTO_STAFF, None),
    ("GET", "/v1/audit-log", ADMIN, None),
    ("PUT", "/v1/templates/email/probe_tpl", ADMIN, {}),
    ("PUT", "/v1/organization/settings", ADMIN, {}),
]


@pytest.mark.parametrize(
    ("method", "path", "allowed", "payload"),
    MATRIX,
    ids=[f"{m} {p}" for m, p, _, _ in MATRIX],
)
def test_access(
    api: Api,
    world_ids: dict[str, Any],
    method: str,
    path: str,
    allowed: set[str],
    payload: Any,
) -> None:
    url = path.format(**world_ids)
    wrong: list[str] = []
    for role in ROLES:
        kw: dict[str, Any] = {} if payload is None else {"json": payload}
        r = api(method, url, role=role, **kw)
        forbidden = r.status_code == 403
        if role in allowed and (forbidden or r.status_code == 401):
            wrong.append(f"{role}:{r.status_code}")
        if role not in allowed and not forbidden:
            wrong.append(f"{role}:{r.status_code}")
        if forbidden:
            code = ((body(r) or {}).get("error") or {}).get("code")
            family = "FORBIDDEN" if "/pathway-" in path else "forbidden"
            if code != family:
                wrong.append(f"{role}:code={code}")
    assert not wrong, wrong
