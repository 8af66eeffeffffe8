"""``/console/rules`` over HTTP: the list's filters, forms generated from the catalogs, the
API's validation errors beside their fields, enable/disable, delete, the dry-run preview,
and what a specialist may not do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from careflow.executions.models import Execution
from careflow.forms.models import Form
from careflow.jobs.models import Job
from careflow.messages.models import Message
from tests.console.signin import sign_in
from tests.fixtures.database import count
from tests.fixtures.factories import FIRST_VIDEO, GDPR_WELCOME, PATIENT, RULES, create_rule

Auth = Callable[..., dict[str, str]]
AUDIT = "/v1/audit-log"


async def _audit(client: httpx.AsyncClient, auth: Auth, object_type: str) -> list[dict[str, Any]]:
    answer = await client.get(AUDIT, params={"object_type": object_type}, headers=auth("admin"))
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]  # type: ignore[no-any-return]


def _form(csrf: str, **fields: str) -> dict[str, str]:
    base = {
        "csrf_token": csrf,
        "op": "save",
        "name": "Welcome by SMS",
        "description": "",
        "enabled": "true",
        "trigger_event": "patient.onboarded",
        "conditions": "{}",
        "actions[0].type": "send_sms",
        "actions[0].template": "welcome_patient",
        "actions[0].delay_minutes": "",
    }
    base.update(fields)
    return base


class TestList:
    async def test_filters_by_trigger_and_status(
        self, client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
    ) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        await create_rule(client, auth, FIRST_VIDEO)
        await create_rule(client, auth, name="Dormant welcome", enabled=False)
        await sign_in(client, token)

        every = await client.get("/console/rules")
        assert every.status_code == 200
        for name in ("New Patient GDPR &amp; Welcome", "First Video Appointment Setup", "Dormant"):
            assert name in every.text
        assert "3 in all" in every.text

        onboarded = await client.get(
            "/console/rules", params={"trigger_event": "patient.onboarded"}
        )
        assert "First Video Appointment Setup" not in onboarded.text
        assert "New Patient GDPR" in onboarded.text and "Dormant welcome" in onboarded.text

        disabled = await client.get("/console/rules", params={"enabled": "false"})
        assert "Dormant welcome" in disabled.text
        assert "New Patient GDPR" not in disabled.text
        assert "First Video" not in disabled.text

    async def test_an_admin_sees_the_write_buttons(
        self, client: httpx.AsyncClient, auth: Auth, token: Callable[..., str]
    ) -> None:
        await create_rule(client, auth)
        await sign_in(client, token)
        page = await client.get("/console/rules")
        assert 'href="/console/rules/new"' in page.text
        assert ">Disable</button>" in page.text


class TestGeneratedForm:
    async def test_fields_carry_the_catalogs_types_bounds_enums_and_defaults(
        self, client: httpx.AsyncClient, token: Callable[..., str]
    ) -> None:
        csrf = await sign_in(client, token)
        page = await client.post(
            "/console/rules/new",
            data=_form(
                csrf,
                op="refresh",
                trigger_event="appointment.before_start",
                **{"actions[0].type": "send_email", "actions[1].type": "update_segment"},
            ),
        )
        assert page.status_code == 200
        html = page.text
        # The trigger's config field: an integer with the catalog's bounds and default.
        assert 'name="trigger_config.hours_before"' in html
        assert 'min="1" max="168" placeholder="24"' in html
        # send_email: template (string, required), delay_minutes (integer, 0..43200, default 0).
        assert 'name="actions[0].template"' in html
        assert (
            'name="actions[0].delay_minutes" value="" min="0" max="43200" placeholder="0"' in html
        )
        # update_segment: an enum is a select of its values.
        assert '<select id="f-actions-1--action" name="actions[1].action"' in html
        assert '<option value="add">add</option><option value="remove">remove</option>' in html
        assert "Add or remove from segment · string, one of add, remove" in html
        # Labels name every generated input.
        assert '<label for="f-actions-1--segment_id">Segment id' in html

    async def test_add_and_remove_action_slots_save_nothing(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        csrf = await sign_in(client, token)
        added = await client.post("/console/rules/new", data=_form(csrf, op="add_action"))
        assert 'name="actions[1].type"' in added.text
        removed = await client.post(
            "/console/rules/new",
            data=_form(csrf, op="remove_action:0", **{"actions[1].type": "send_email"}),
        )
        assert 'name="actions[1].type"' not in removed.text
        assert '<option value="send_email" selected>' in removed.text
        listed = await client.get(RULES, headers=auth())
        assert listed.json()["meta"]["total"] == 0


class TestCreate:
    async def test_a_form_creates_the_rule_the_api_would(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        csrf = await sign_in(client, token)
        answer = await client.post(
            "/console/rules/new",
            data=_form(
                csrf,
                trigger_event="appointment.before_start",
                conditions='{"appointment.type": "video"}',
                **{"trigger_config.hours_before": "", "actions[0].delay_minutes": "15"},
            ),
        )
        assert answer.status_code == 303, answer.text
        rule_id = answer.headers["location"].split("/")[-1].split("?")[0]
        rule = (await client.get(f"{RULES}/{rule_id}", headers=auth())).json()["data"]
        assert rule["trigger_config"] == {"hours_before": 24}  # the catalog's default
        assert rule["conditions"] == {"appointment.type": "video"}
        assert rule["actions"] == [
            {"type": "send_sms", "template": "welcome_patient", "delay_minutes": 15}
        ]
        assert rule["enabled"] is True
        # The service's own audit entry, once.
        entries = await _audit(client, auth, "automation_rule")
        assert [e["action"] for e in entries] == ["create"]
        page = await client.get(answer.headers["location"])
        assert "Saved." in page.text

    async def test_the_apis_errors_are_shown_beside_their_fields(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        csrf = await sign_in(client, token)
        answer = await client.post(
            "/console/rules/new",
            data=_form(
                csrf,
                name="  ",
                conditions='{"appointment.type": "video"}',
                **{"actions[0].delay_minutes": "99999", "actions[0].template": "no_such"},
            ),
        )
        assert answer.status_code == 400
        html = answer.text
        assert '<div class="field-error" id="name-error" role="alert">' in html
        assert 'id="actions[0]-delay_minutes-error" role="alert">must be at most 43200' in html
        assert "unknown sms template" in html
        # A condition's path error goes beside the conditions editor, naming the path.
        assert 'id="conditions-error" role="alert">conditions.appointment.type:' in html
        # What was typed is kept.
        assert 'value="99999"' in html
        assert (await client.get(RULES, headers=auth())).json()["meta"]["total"] == 0

    async def test_conditions_that_are_not_json_are_refused_with_the_rest(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        csrf = await sign_in(client, token)
        answer = await client.post(
            "/console/rules/new",
            data=_form(csrf, conditions="{not json", **{"actions[0].template": ""}),
        )
        assert answer.status_code == 400
        assert 'id="conditions-error" role="alert">not valid JSON' in answer.text
        assert 'id="actions[0]-template-error" role="alert">is required' in answer.text
        assert (await client.get(RULES, headers=auth())).json()["meta"]["total"] == 0
        assert await _audit(client, auth, "automation_rule") == []


class TestEdit:
    async def test_an_edit_saves_every_field_and_the_service_audits_it(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        rule = await create_rule(client, auth, GDPR_WELCOME)
        csrf = await sign_in(client, token)
        page = await client.get(f"/console/rules/{rule['id']}")
        assert 'value="New Patient GDPR &amp; Welcome"' in page.text
        assert 'name="actions[2].template" value="welcome_patient"' in page.text
        fields = {
            "csrf_token": csrf,
            "op": "save",
            "name": "GDPR only",
            "enabled": "true",
            "trigger_event": "patient.onboarded",
            "conditions": '{"patient.tags": "new"}',
            "actions[0].type": "require_form",
            "actions[0].form_template_id": "42",
            "actions[0].blocking": "true",
            "actions[0].description": "Privacy Policy",
        }
        answer = await client.post(f"/console/rules/{rule['id']}", data=fields)
        assert answer.status_code == 303, answer.text
        saved = (await client.get(f"{RULES}/{rule['id']}", headers=auth())).json()["data"]
        assert saved["name"] == "GDPR only"
        assert saved["description"] is None
        assert saved["conditions"] == {"patient.tags": "new"}
        assert saved["actions"] == [
            {
                "type": "require_form",
                "form_template_id": 42,
                "blocking": True,
                "description": "Privacy Policy",
            }
        ]
        assert saved["version"] == 2
        entries = await _audit(client, auth, "automation_rule")
        assert sorted(e["action"] for e in entries) == ["create", "update"]

    async def test_a_refused_edit_changes_nothing(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        rule = await create_rule(client, auth)
        csrf = await sign_in(client, token)
        answer = await client.post(
            f"/console/rules/{rule['id']}",
            data=_form(csrf, name="Renamed", conditions="[1"),
        )
        assert answer.status_code == 400
        assert 'id="conditions-error"' in answer.text
        saved = (await client.get(f"{RULES}/{rule['id']}", headers=auth())).json()["data"]
        assert saved["name"] == "Welcome" and saved["version"] == 1
        assert [e["action"] for e in await _audit(client, auth, "automation_rule")] == ["create"]


class TestSwitches:
    async def test_disable_and_enable(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        rule = await create_rule(client, auth)
        csrf = await sign_in(client, token)
        off = await client.post(
            f"/console/rules/{rule['id']}/enabled",
            data={"csrf_token": csrf, "enabled": "false", "back": "/console/rules?enabled=true"},
        )
        assert off.status_code == 303
        assert off.headers["location"] == "/console/rules?enabled=true"
        got = (await client.get(f"{RULES}/{rule['id']}", headers=auth())).json()["data"]
        assert got["enabled"] is False
        on = await client.post(
            f"/console/rules/{rule['id']}/enabled",
            data={"csrf_token": csrf, "enabled": "true", "back": "https://elsewhere.example/"},
        )
        assert on.headers["location"] == f"/console/rules/{rule['id']}"
        got = (await client.get(f"{RULES}/{rule['id']}", headers=auth())).json()["data"]
        assert got["enabled"] is True
        updates = [
            e for e in await _audit(client, auth, "automation_rule") if e["action"] == "update"
        ]
        assert sorted(e["after"]["enabled"] for e in updates) == [False, True]
        assert {e["after"]["via"] for e in updates} == {"console"}

    async def test_delete(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        rule = await create_rule(client, auth)
        csrf = await sign_in(client, token)
        answer = await client.post(f"/console/rules/{rule['id']}/delete", data={"csrf_token": csrf})
        assert answer.status_code == 303
        assert (await client.get(f"{RULES}/{rule['id']}", headers=auth())).status_code == 404
        actions = [e["action"] for e in await _audit(client, auth, "automation_rule")]
        assert sorted(actions) == ["create", "delete"]


class TestDryRun:
    async def test_the_preview_is_shown_and_nothing_is_written(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth, engine: Any
    ) -> None:
        rule = await create_rule(client, auth, GDPR_WELCOME)
        put = await client.put(
            f"/v1/entities/patient/{PATIENT['id']}", json=PATIENT, headers=auth()
        )
        assert put.status_code == 200
        csrf = await sign_in(client, token)
        audit_before = await client.get(AUDIT, headers=auth())
        answer = await client.post(
            f"/console/rules/{rule['id']}/test",
            data={"trigger_entity_type": "patient", "trigger_entity_id": "100"},
            headers={"HX-Request": "true", "X-CSRF-Token": csrf},
        )
        assert answer.status_code == 200
        html = answer.text
        assert "<strong>Would run</strong>" in html
        assert '<a href="/console/patients/100">100</a>' in html
        assert "would_send_to" in html and "ada@example.com" in html
        assert "would_create_form" in html
        for model in (Execution, Form, Message, Job):
            assert await count(engine, model) == 0
        audit_after = await client.get(AUDIT, headers=auth())
        assert audit_after.json()["meta"]["total"] == audit_before.json()["meta"]["total"]

    async def test_an_unknown_entity_is_told_and_a_full_page_without_htmx(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        rule = await create_rule(client, auth)
        csrf = await sign_in(client, token)
        answer = await client.post(
            f"/console/rules/{rule['id']}/test",
            data={"csrf_token": csrf, "trigger_entity_type": "patient", "trigger_entity_id": "7"},
        )
        assert answer.status_code == 404
        assert "<h1>Welcome</h1>" in answer.text
        assert 'class="notice error" role="alert">' in answer.text
        bad = await client.post(
            f"/console/rules/{rule['id']}/test",
            data={"trigger_entity_type": "planet", "trigger_entity_id": "7"},
            headers={"HX-Request": "true", "X-CSRF-Token": csrf},
        )
        assert bad.status_code == 200
        assert "trigger_entity_type:" in bad.text


class TestSpecialist:
    async def test_reads_but_may_not_write(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        rule = await create_rule(client, auth)
        csrf = await sign_in(client, token, role="specialist")
        listed = await client.get("/console/rules")
        assert listed.status_code == 200 and "Welcome" in listed.text
        assert ">New rule</a>" not in listed.text and ">Disable</button>" not in listed.text
        shown = await client.get(f"/console/rules/{rule['id']}")
        assert shown.status_code == 200
        assert "<fieldset disabled>" in shown.text
        for label in ("Save rule", "Disable rule", "Delete rule", "Run test"):
            assert label not in shown.text
        assert (await client.get("/console/rules/new")).status_code == 403
        for path, data in (
            ("/console/rules/new", _form(csrf)),
            (f"/console/rules/{rule['id']}", _form(csrf)),
            (f"/console/rules/{rule['id']}/enabled", {"csrf_token": csrf, "enabled": "false"}),
            (f"/console/rules/{rule['id']}/delete", {"csrf_token": csrf}),
            (
                f"/console/rules/{rule['id']}/test",
                {"csrf_token": csrf, "trigger_entity_type": "patient", "trigger_entity_id": "1"},
            ),
        ):
            answer = await client.post(path, data=data)
            assert answer.status_code == 403, path
        got = (await client.get(f"{RULES}/{rule['id']}", headers=auth())).json()["data"]
        assert got["enabled"] is True and got["version"] == 1

    async def test_a_write_without_the_csrf_token_is_refused(
        self, client: httpx.AsyncClient, token: Callable[..., str], auth: Auth
    ) -> None:
        rule = await create_rule(client, auth)
        await sign_in(client, token)
        answer = await client.post(
            f"/console/rules/{rule['id']}/enabled", data={"enabled": "false"}
        )
        assert answer.status_code == 403
