"""Entity snapshots (PUT /v1/entities/…) and the rule dry run (POST …/rules/{id}/test).

The dry run reads a patient that only this module writes (200), so the world's events about
patient 100 cannot change the address it would send to.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance.envelopes import auto_error, body, data, describe
from tests.conformance.server import Api
from tests.conformance.world import World

PATIENT = 200
NOT_JSON: dict[str, Any] = {"headers": {"Content-Type": "application/json"}}


@pytest.fixture(scope="module")
def patient_entity(api: Api) -> httpx.Response:
    return api(
        "PUT",
        f"/v1/entities/patient/{PATIENT}",
        json={"id": PATIENT, "email": "patient@example.com", "first_name": "Pat"},
    )


@pytest.fixture(scope="module")
def dry_run(api: Api, world: World, patient_entity: httpx.Response) -> httpx.Response:
    return api(
        "POST",
        f"/v1/automations/rules/{world.rule_id}/test",
        json={"trigger_entity_type": "patient", "trigger_entity_id": PATIENT},
    )


class TestEntities:
    def test_put_entity_200_data(self, patient_entity: httpx.Response) -> None:
        r = patient_entity
        b = body(r) or {}
        assert r.status_code == 200 and set(b) == {"data"} and b["data"].get("id") == PATIENT, (
            describe(r)
        )

    def test_put_entity_string_id_echoed(self, api: Api) -> None:
        r = api(
            "PUT",
            "/v1/entities/patient/pat_abc",
            json={"id": "pat_abc", "email": "str@example.com"},
        )
        assert r.status_code == 200 and data(r).get("id") == "pat_abc", describe(r)

    def test_unknown_entity_type_400(self, api: Api) -> None:
        r = api("PUT", "/v1/entities/spaceship/1", json={"id": 1})
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_non_json_entity_400(self, api: Api) -> None:
        r = api("PUT", f"/v1/entities/patient/{PATIENT}", content=b"nope", **NOT_JSON)
        assert auto_error(r, 400, "validation_error"), describe(r)


class TestDryRun:
    def test_dry_run_200_data(self, dry_run: httpx.Response) -> None:
        assert dry_run.status_code == 200 and set(body(dry_run) or {}) == {"data"}, describe(
            dry_run
        )

    def test_dry_run_would_execute(self, dry_run: httpx.Response) -> None:
        t = data(dry_run)
        assert t.get("would_execute") is True and t.get("conditions_matched") is True, t

    def test_preview_per_action(self, dry_run: httpx.Response) -> None:
        preview = data(dry_run).get("actions_preview") or []
        assert len(preview) == 3, preview

    def test_preview_require_form_shape(self, dry_run: httpx.Response) -> None:
        first = (data(dry_run).get("actions_preview") or [{}])[0]
        assert (
            first.get("type") == "require_form"
            and first.get("form_template_id") == 42
            and first.get("would_create_form") is True
            and first.get("blocking") is True
        ), first

    def test_preview_send_email_would_send_to(self, dry_run: httpx.Response) -> None:
        last = (data(dry_run).get("actions_preview") or [{}])[-1]
        assert (
            last.get("type") == "send_email"
            and last.get("template") == "welcome_patient"
            and last.get("would_send_to") == "patient@example.com"
        ), last

    def test_unknown_entity_404(self, api: Api, world: World) -> None:
        r = api(
            "POST",
            f"/v1/automations/rules/{world.rule_id}/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": 424242},
        )
        assert auto_error(r, 404, "entity_not_found"), describe(r)

    def test_unknown_rule_404(self, api: Api, patient_entity: httpx.Response) -> None:
        r = api(
            "POST",
            "/v1/automations/rules/999999/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": PATIENT},
        )
        assert auto_error(r, 404, "automation_rule_not_found"), describe(r)

    def test_missing_field_400(self, api: Api, world: World) -> None:
        r = api(
            "POST",
            f"/v1/automations/rules/{world.rule_id}/test",
            json={"trigger_entity_type": "patient"},
        )
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_non_json_400(self, api: Api, world: World) -> None:
        r = api("POST", f"/v1/automations/rules/{world.rule_id}/test", content=b"[", **NOT_JSON)
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_non_matching_conditions_would_not_execute(
        self, api: Api, world: World, patient_entity: httpx.Response
    ) -> None:
        r = api(
            "POST",
            f"/v1/automations/rules/{world.video_rule_id}/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": PATIENT},
        )
        t = data(r)
        assert (
            r.status_code == 200
            and t.get("conditions_matched") is False
            and t.get("would_execute") is False
        ), t
