"""Executions once the job worker has run the world's rules (Automations API reference):
list and get views, filters, 404s for every kind of id, retry refusals and rule counters.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.envelopes import (
    TS_Z,
    auto_error,
    body,
    data,
    describe,
    page_meta_ok,
    poll,
    timestamps_not_z,
)
from tests.conformance.seed import EXECUTION_FIELDS, GDPR_RULE
from tests.conformance.server import Api
from tests.conformance.world import ExecutionsFor, WorkerResults, World


@pytest.fixture(scope="module")
def gdpr_execution(worker_results: WorkerResults) -> dict[str, Any]:
    """The GDPR rule's execution for patient 100, forms created, welcome email still delayed."""
    return worker_results.gdpr_executions[0] if worker_results.gdpr_executions else {}


@pytest.fixture(scope="module")
def video_executions(
    worker_results: WorkerResults, world: World, executions_for: ExecutionsFor
) -> dict[Any, dict[str, Any]]:
    """The video rule's executions by trigger entity id."""
    return {e.get("trigger_entity_id"): e for e in executions_for(world.video_rule_id)}


class TestWorker:
    def test_gdpr_execution_recorded_for_patient_100(self, worker_results: WorkerResults) -> None:
        assert len(worker_results.gdpr_executions) == 1, worker_results.gdpr_executions

    def test_video_executions_finished(
        self, worker_results: WorkerResults, world: World, executions_for: ExecutionsFor
    ) -> None:
        assert worker_results.video_finished, executions_for(world.video_rule_id)


class TestList:
    def test_list_envelope_and_defaults(self, api: Api, worker_results: WorkerResults) -> None:
        r = api("GET", "/v1/automations/executions")
        assert page_meta_ok(body(r)), describe(r)

    def test_execution_fields(self, api: Api, worker_results: WorkerResults) -> None:
        executions = (body(api("GET", "/v1/automations/executions")) or {}).get("data", [])
        missing = [
            sorted(EXECUTION_FIELDS - set(e)) for e in executions if not set(e) >= EXECUTION_FIELDS
        ]
        assert not missing, missing

    def test_timestamps_z(self, api: Api, worker_results: WorkerResults) -> None:
        b = body(api("GET", "/v1/automations/executions"))
        assert not timestamps_not_z(b), timestamps_not_z(b)


class TestGdprExecution:
    def test_running_while_delayed_email_pending(self, gdpr_execution: dict[str, Any]) -> None:
        assert gdpr_execution.get("status") == "running", gdpr_execution.get("status")

    def test_ids_and_trigger_fields(self, gdpr_execution: dict[str, Any]) -> None:
        e = gdpr_execution
        assert (
            isinstance(e.get("id"), int)
            and e.get("trigger_entity_id") == 100
            and e.get("automation_rule_name") == GDPR_RULE["name"]
            and e.get("trigger_entity_type") == "patient"
            and e.get("trigger_event") == "patient.onboarded"
        ), e

    def test_list_view_actions_executed(self, gdpr_execution: dict[str, Any]) -> None:
        acts = gdpr_execution.get("actions_executed") or []
        assert len(acts) >= 2 and all(
            a.get("action") == "require_form"
            and a.get("status") == "success"
            and isinstance(a.get("form_id"), int)
            and "type" not in a
            for a in acts[:2]
        ), acts

    def test_get_execution_200_data(self, api: Api, gdpr_execution: dict[str, Any]) -> None:
        r = api("GET", f"/v1/automations/executions/{gdpr_execution.get('id', 0)}")
        assert r.status_code == 200 and set(body(r) or {}) == {"data"}, describe(r)

    def test_get_view_actions_executed(self, api: Api, gdpr_execution: dict[str, Any]) -> None:
        r = api("GET", f"/v1/automations/executions/{gdpr_execution.get('id', 0)}")
        acts = data(r).get("actions_executed") or []
        wanted = {"action", "type", "form_template_id", "status", "form_id", "duration_ms"}
        assert (
            len(acts) >= 2
            and all(wanted <= set(a) for a in acts[:2])
            and acts[0].get("form_template_id") == 42
        ), acts


class TestVideoExecutions:
    def test_trigger_entity_id_echoed_as_given(
        self, video_executions: dict[Any, dict[str, Any]]
    ) -> None:
        # appointment.first_booked's entity is the appointment: its id as the producer sent it.
        assert (
            "apt-x" in video_executions
            and 50 in video_executions
            and all(
                x.get("trigger_entity_type") == "appointment" for x in video_executions.values()
            )
        ), list(video_executions)

    def test_success_for_appointment_50(self, video_executions: dict[Any, dict[str, Any]]) -> None:
        e = video_executions.get(50) or {}
        assert e.get("status") == "success", e

    def test_trigger_event_first_booked(self, video_executions: dict[Any, dict[str, Any]]) -> None:
        e = video_executions.get(50) or {}
        assert e.get("trigger_event") == "appointment.first_booked", e

    def test_get_view_send_email_entry(
        self, api: Api, video_executions: dict[Any, dict[str, Any]]
    ) -> None:
        e = video_executions.get(50) or {}
        acts = (
            data(api("GET", f"/v1/automations/executions/{e.get('id', 0)}")).get("actions_executed")
            or []
        )
        em = [a for a in acts if a.get("action") == "send_email"]
        assert (
            em
            and em[0].get("template") == "first_appointment_video_guide"
            and isinstance(em[0].get("email_id"), str)
            and em[0].get("status") == "success"
            and "duration_ms" in em[0]
        ), acts

    def test_non_matching_conditions_skipped(
        self, video_executions: dict[Any, dict[str, Any]]
    ) -> None:
        e = video_executions.get(60) or {}
        assert e.get("status") == "skipped", e


class TestFilters:
    def test_status_skipped(self, api: Api, worker_results: WorkerResults) -> None:
        r = api("GET", "/v1/automations/executions", params={"status": "skipped"})
        got = (body(r) or {}).get("data") or []
        assert r.status_code == 200 and got and all(x["status"] == "skipped" for x in got), (
            describe(r)
        )

    def test_trigger_event(self, api: Api, video_executions: dict[Any, dict[str, Any]]) -> None:
        r = api(
            "GET",
            "/v1/automations/executions",
            params={"trigger_event": "appointment.first_booked"},
        )
        got = (body(r) or {}).get("data", []) if r.status_code == 200 else []
        assert len(got) == len(video_executions) >= 3 and all(
            x["trigger_event"] == "appointment.first_booked" for x in got
        ), describe(r)

    def test_from_and_to_date(self, api: Api, worker_results: WorkerResults) -> None:
        r = api(
            "GET",
            "/v1/automations/executions",
            params={"from_date": "2000-01-01", "to_date": "2000-01-02"},
        )
        assert r.status_code == 200 and r.json()["data"] == [], describe(r)

    def test_bad_status_400(self, api: Api) -> None:
        r = api("GET", "/v1/automations/executions", params={"status": "bogus"})
        assert auto_error(r, 400, "validation_error"), describe(r)

    def test_limit_101_400(self, api: Api) -> None:
        r = api("GET", "/v1/automations/executions", params={"limit": 101})
        assert auto_error(r, 400, "validation_error"), describe(r)


class TestNotFound:
    def test_missing_execution_404(self, api: Api) -> None:
        r = api("GET", "/v1/automations/executions/999999")
        assert auto_error(r, 404, "execution_not_found"), describe(r)

    def test_non_numeric_execution_id_404(self, api: Api) -> None:
        r = api("GET", "/v1/automations/executions/abc")
        assert auto_error(r, 404, "execution_not_found"), describe(r)

    @pytest.mark.parametrize(
        ("path", "code"),
        [
            ("/v1/automations/executions/abc/retry", "execution_not_found"),
            ("/v1/automations/rules/abc/test", "automation_rule_not_found"),
        ],
    )
    def test_post_non_numeric_id_404(self, api: Api, path: str, code: str) -> None:
        r = api("POST", path, json={"trigger_entity_type": "patient", "trigger_entity_id": 100})
        assert auto_error(r, 404, code), describe(r)

    @pytest.mark.parametrize(
        ("path", "code"),
        [
            ("/v1/forms/abc", "form_not_found"),
            ("/v1/events/abc", "event_not_found"),
            ("/v1/episodes/abc", "episode_not_found"),
            ("/v1/messages/abc", "message_not_found"),
            ("/v1/automations/executions/99999999999999999999999", "execution_not_found"),
            ("/v1/automations/rules/99999999999999999999999", "automation_rule_not_found"),
        ],
    )
    def test_get_unknown_id_404(self, api: Api, path: str, code: str) -> None:
        r = api("GET", path)
        assert auto_error(r, 404, code), describe(r)


class TestRetryRefusals:
    def test_retry_missing_execution_404(self, api: Api) -> None:
        r = api("POST", "/v1/automations/executions/999999/retry")
        assert auto_error(r, 404, "execution_not_found"), describe(r)

    def test_retry_of_a_success_409(
        self, api: Api, video_executions: dict[Any, dict[str, Any]]
    ) -> None:
        e = video_executions.get(50) or {}
        r = api("POST", f"/v1/automations/executions/{e.get('id', 0)}/retry")
        assert r.status_code == 409 and "error" in (body(r) or {}), describe(r)


class TestRuleCounters:
    def test_execution_count_counts_ran_not_skipped(
        self, api: Api, world: World, worker_results: WorkerResults
    ) -> None:
        rule = data(api("GET", f"/v1/automations/rules/{world.video_rule_id}"))
        assert rule.get("execution_count") == 2, rule.get("execution_count")

    def test_last_executed_at_set_z(
        self, api: Api, world: World, worker_results: WorkerResults
    ) -> None:
        rule = data(api("GET", f"/v1/automations/rules/{world.video_rule_id}"))
        assert TS_Z.match(str(rule.get("last_executed_at"))), rule.get("last_executed_at")


def test_execution_for_failing_mailbox_exists(world: World, executions_for: ExecutionsFor) -> None:
    def failing() -> dict[str, Any] | None:
        ex = [x for x in executions_for(world.rule_id) if x.get("trigger_entity_id") == 103]
        return ex[0] if ex else None

    assert poll(failing, 20)
