"""Automation rules CRUD (Automations API reference): the seed's rules as created by the
world, reads, lists and filters, validation, and update and delete (in a scratch organisation,
so the world's lists keep their counts).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance.envelopes import (
    TS_Z,
    auto_error,
    body,
    data,
    describe,
    error_fields,
    page_meta_ok,
    timestamps_not_z,
)
from tests.conformance.seed import GDPR_RULE, OTHER, RULE_FIELDS, SCRATCH, WORLD
from tests.conformance.server import Api
from tests.conformance.world import World

# The world's rules: GDPR, video, segment, the 1 h reminder, the delayed welcome and the
# reminder with the default trigger_config.
WORLD_RULE_COUNT = 6


class TestCreate:
    def test_gdpr_rule_201_data_envelope(self, world: World) -> None:
        r = world.responses["create_gdpr"]
        assert r.status_code == 201 and set(body(r) or {}) == {"data"}, describe(r)

    def test_rule_fields(self, world: World) -> None:
        gdpr = data(world.responses["create_gdpr"])
        assert set(gdpr) >= RULE_FIELDS, sorted(RULE_FIELDS - set(gdpr))

    def test_rule_id_integer(self, world: World) -> None:
        assert isinstance(world.rule_id, int), world.rule_id

    def test_rule_organization_id_integer(self, world: World) -> None:
        assert data(world.responses["create_gdpr"]).get("organization_id") == WORLD

    def test_rule_actions_echoed_with_delay(self, world: World) -> None:
        gdpr = data(world.responses["create_gdpr"])
        assert gdpr.get("actions") == GDPR_RULE["actions"], gdpr.get("actions")

    def test_new_rule_never_executed(self, world: World) -> None:
        gdpr = data(world.responses["create_gdpr"])
        assert gdpr.get("execution_count") == 0 and gdpr.get("last_executed_at") is None

    def test_rule_timestamps_z(self, world: World) -> None:
        gdpr = data(world.responses["create_gdpr"])
        assert not timestamps_not_z(gdpr) and "created_at" in gdpr, timestamps_not_z(gdpr)

    def test_rule_trigger_config_and_conditions_empty(self, world: World) -> None:
        gdpr = data(world.responses["create_gdpr"])
        assert gdpr.get("trigger_config") == {} and gdpr.get("conditions") == {}

    def test_video_rule_201(self, world: World) -> None:
        r = world.responses["create_video"]
        assert r.status_code == 201, describe(r)

    def test_video_rule_echoes_conditions(self, world: World) -> None:
        video = data(world.responses["create_video"])
        assert (
            video.get("conditions") == {"appointment.type": "video"}
            and video.get("trigger_event") == "appointment.first_booked"
        ), video

    def test_minimal_update_segment_rule_201(self, world: World) -> None:
        r = world.responses["create_segment"]
        assert r.status_code == 201, describe(r)

    def test_minimal_rule_defaults(self, world: World) -> None:
        seg = data(world.responses["create_segment"])
        assert (
            seg.get("enabled") is True
            and seg.get("description") is None
            and seg.get("trigger_config") == {}
            and seg.get("conditions") == {}
        ), seg

    def test_trigger_config_default_filled(self, world: World) -> None:
        r = world.responses["create_default_reminder"]
        assert r.status_code == 201 and data(r).get("trigger_config") == {"hours_before": 24}, (
            describe(r)
        )


class TestRead:
    def test_get_rule_200_data_envelope(self, api: Api, world: World) -> None:
        r = api("GET", f"/v1/automations/rules/{world.rule_id}")
        b = body(r) or {}
        assert (
            r.status_code == 200 and set(b) == {"data"} and b["data"].get("id") == world.rule_id
        ), describe(r)

    def test_get_rule_matches_seed_example(self, api: Api, world: World) -> None:
        got = data(api("GET", f"/v1/automations/rules/{world.rule_id}"))
        assert all(got.get(k) == v for k, v in GDPR_RULE.items()), got

    def test_list_envelope_and_default_paging(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules")
        assert page_meta_ok(body(r)), describe(r)

    def test_list_total(self, api: Api) -> None:
        meta = (body(api("GET", "/v1/automations/rules")) or {}).get("meta", {})
        assert meta.get("total") == WORLD_RULE_COUNT, meta

    def test_filter_trigger_event(self, api: Api, world: World) -> None:
        r = api("GET", "/v1/automations/rules", params={"trigger_event": "patient.onboarded"})
        ids = [x["id"] for x in (body(r) or {}).get("data", [])]
        want = [world.rule_id, world.id_of("create_segment"), world.id_of("create_delayed")]
        assert sorted(ids) == sorted(want), ids

    def test_filter_enabled_false(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules", params={"enabled": "false"})
        assert r.status_code == 200 and (body(r) or {}).get("data") == [], describe(r)

    def test_paging_page_2_limit_2(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules", params={"page": 2, "limit": 2})
        b = body(r)
        assert page_meta_ok(b, 2, 2) and len(b["data"]) == min(2, WORLD_RULE_COUNT - 2), describe(r)

    def test_limit_101_is_400(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules", params={"limit": 101})
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_page_0_is_400(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules", params={"page": 0})
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_missing_rule_404(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules/999999")
        assert auto_error(r, 404, "automation_rule_not_found"), describe(r)

    def test_non_numeric_rule_id_404(self, api: Api) -> None:
        r = api("GET", "/v1/automations/rules/abc")
        assert auto_error(r, 404, "automation_rule_not_found"), describe(r)

    def test_other_organisations_rule_404(self, api: Api, world: World) -> None:
        r = api("GET", f"/v1/automations/rules/{world.rule_id}", org=OTHER)
        assert auto_error(r, 404, "automation_rule_not_found"), describe(r)


class TestValidation:
    def test_invalid_trigger_event_names_the_field(self, api: Api) -> None:
        r = api("POST", "/v1/automations/rules", json=dict(GDPR_RULE, trigger_event="nope.nope"))
        assert auto_error(r, 400, "validation_error") and any(
            "trigger_event" in f for f in error_fields(r)
        ), describe(r)

    def test_invalid_action_type(self, api: Api) -> None:
        bad = dict(GDPR_RULE, actions=[{"type": "launch_rocket"}])
        r = api("POST", "/v1/automations/rules", json=bad)
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_empty_actions(self, api: Api) -> None:
        r = api("POST", "/v1/automations/rules", json=dict(GDPR_RULE, actions=[]))
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_unknown_template(self, api: Api) -> None:
        actions = [{"type": "send_email", "template": "no_such_template"}]
        r = api("POST", "/v1/automations/rules", json=dict(GDPR_RULE, actions=actions))
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_trigger_config_out_of_range(self, api: Api) -> None:
        rule = {
            "name": "x",
            "trigger_event": "appointment.before_start",
            "trigger_config": {"hours_before": 500},
            "actions": [{"type": "send_email", "template": "appointment_reminder"}],
        }
        r = api("POST", "/v1/automations/rules", json=rule)
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_malformed_conditions(self, api: Api) -> None:
        rule = dict(GDPR_RULE, conditions={"a": {"bogus_op": 1}})
        r = api("POST", "/v1/automations/rules", json=rule)
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_non_json_body(self, api: Api) -> None:
        r = api(
            "POST",
            "/v1/automations/rules",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_json_array_body(self, api: Api) -> None:
        r = api("POST", "/v1/automations/rules", json=[GDPR_RULE])
        assert auto_error(r, 400, "validation_error"), describe(r)


SCRATCH_RULE = {
    "name": "Idem",
    "trigger_event": "invoice.overdue",
    "enabled": False,
    "actions": [{"type": "send_email", "template": "welcome_patient"}],
}
UPDATE = {
    "name": "Updated Rule Name",
    "enabled": False,
    "actions": [{"type": "send_email", "template": "welcome_patient"}],
}


@pytest.fixture(scope="module")
def updated_rule(api: Api) -> tuple[Any, httpx.Response]:
    """A scratch rule and the answer to its partial update (PUT)."""
    rule_id = data(api("POST", "/v1/automations/rules", org=SCRATCH, json=SCRATCH_RULE)).get("id")
    return rule_id, api("PUT", f"/v1/automations/rules/{rule_id}", org=SCRATCH, json=UPDATE)


@pytest.fixture(scope="module")
def deleted_rule(api: Api) -> tuple[Any, httpx.Response]:
    """A scratch rule and the answer to its DELETE."""
    rule_id = data(api("POST", "/v1/automations/rules", org=SCRATCH, json=SCRATCH_RULE)).get("id")
    return rule_id, api("DELETE", f"/v1/automations/rules/{rule_id}", org=SCRATCH)


class TestUpdateAndDelete:
    def test_put_is_a_partial_update(self, updated_rule: tuple[Any, httpx.Response]) -> None:
        _, r = updated_rule
        upd = data(r)
        assert (
            r.status_code == 200
            and upd.get("name") == "Updated Rule Name"
            and upd.get("enabled") is False
            and upd.get("trigger_event") == "invoice.overdue"
        ), describe(r)

    def test_put_updated_at_z(self, updated_rule: tuple[Any, httpx.Response]) -> None:
        _, r = updated_rule
        assert TS_Z.match(str(data(r).get("updated_at")))

    def test_put_empty_object_leaves_rule_unchanged(
        self, api: Api, updated_rule: tuple[Any, httpx.Response]
    ) -> None:
        rule_id, _ = updated_rule
        r = api("PUT", f"/v1/automations/rules/{rule_id}", org=SCRATCH, json={})
        assert r.status_code == 200 and data(r).get("name") == "Updated Rule Name", describe(r)

    def test_put_missing_rule_404(self, api: Api) -> None:
        r = api("PUT", "/v1/automations/rules/999999", org=SCRATCH, json={"name": "x"})
        assert auto_error(r, 404, "automation_rule_not_found"), describe(r)

    def test_put_invalid_400(self, api: Api, updated_rule: tuple[Any, httpx.Response]) -> None:
        rule_id, _ = updated_rule
        r = api(
            "PUT", f"/v1/automations/rules/{rule_id}", org=SCRATCH, json={"trigger_event": "bogus"}
        )
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_delete_204_without_body(self, deleted_rule: tuple[Any, httpx.Response]) -> None:
        _, r = deleted_rule
        assert r.status_code == 204 and r.content == b"", f"{r.status_code} {r.content[:50]!r}"

    def test_delete_again_404(self, api: Api, deleted_rule: tuple[Any, httpx.Response]) -> None:
        rule_id, _ = deleted_rule
        r = api("DELETE", f"/v1/automations/rules/{rule_id}", org=SCRATCH)
        assert auto_error(r, 404, "automation_rule_not_found"), describe(r)
