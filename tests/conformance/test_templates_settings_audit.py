"""Email templates, organisation settings and the audit log (SPEC §6, §11)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance.envelopes import auto_error, body, describe, page_meta_ok, timestamps_not_z
from tests.conformance.server import Api
from tests.conformance.world import PathwayWorld, World

BUILT_INS = {
    "welcome_patient",
    "first_appointment_video_guide",
    "appointment_reminder",
    "form_reminder",
}


class TestTemplates:
    def test_list_has_built_ins(self, api: Api) -> None:
        r = api("GET", "/v1/templates")
        listed = (body(r) or {}).get("data")
        keys = (
            {x.get("key") or x.get("name") for x in listed} if isinstance(listed, list) else set()
        )
        assert r.status_code == 200 and keys >= BUILT_INS, describe(r)

    def test_override_put_get_delete(self, api: Api) -> None:
        path = "/v1/templates/email/probe_tpl"
        r = api("PUT", path, json={"subject": "Hi {{ patient.first_name }}", "body": "Hello"})
        assert r.status_code in (200, 201), describe(r)
        r = api("GET", path)
        assert r.status_code == 200, describe(r)
        r = api("DELETE", path)
        assert r.status_code == 204 and r.content == b"", describe(r)
        r = api("GET", path)
        assert auto_error(r, 404, "template_not_found"), describe(r)


def test_organisation_settings_200_data(api: Api) -> None:
    r = api("GET", "/v1/organization/settings")
    assert r.status_code == 200 and set(body(r) or {}) == {"data"}, describe(r)


@pytest.fixture(scope="module")
def audit_log(api: Api, world: World, pathway_world: PathwayWorld) -> httpx.Response:
    return api("GET", "/v1/audit-log")


def first_entry(audit_log: httpx.Response) -> dict[str, Any]:
    entries = (body(audit_log) or {}).get("data") or []
    return entries[0] if entries else {}


class TestAuditLog:
    def test_envelope(self, audit_log: httpx.Response) -> None:
        assert page_meta_ok(body(audit_log)), describe(audit_log)

    def test_entry_fields(self, audit_log: httpx.Response) -> None:
        a0 = first_entry(audit_log)
        parts = ("actor", "action", "object", "before", "after", "request_id", "_at")
        assert a0 and all(any(k in key for key in a0) for k in parts), a0

    def test_timestamps_z(self, audit_log: httpx.Response) -> None:
        assert not timestamps_not_z(body(audit_log)), timestamps_not_z(body(audit_log))

    @pytest.mark.parametrize(
        "params",
        [
            {"actor": "usr_admin"},
            {"object_id": "<rule_id>"},
            {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        ],
        ids=["actor", "object_id", "from_to"],
    )
    def test_filter(
        self, api: Api, world: World, audit_log: httpx.Response, params: dict[str, str]
    ) -> None:
        params = {k: str(world.rule_id) if v == "<rule_id>" else v for k, v in params.items()}
        r = api("GET", "/v1/audit-log", params=params)
        assert r.status_code == 200 and r.json().get("data"), describe(r)

    def test_filter_object_type(self, api: Api, audit_log: httpx.Response) -> None:
        r = api("GET", "/v1/audit-log", params={"object_type": "pathway_rule"})
        got = (body(r) or {}).get("data") or []
        assert (
            r.status_code == 200
            and got
            and all("pathway" in str(x.get("object_type")) for x in got)
        ), describe(r)

    def test_entries_carry_no_emails(self, audit_log: httpx.Response) -> None:
        assert "@example.com" not in str((body(audit_log) or {}).get("data"))

    def test_entries_cannot_be_deleted(self, api: Api, audit_log: httpx.Response) -> None:
        r = api("DELETE", f"/v1/audit-log/{first_entry(audit_log).get('id', 1)}")
        assert r.status_code in (404, 405), r.status_code
