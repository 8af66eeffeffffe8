"""POST /v1/automations/rules/{id}/test: a preview with no side effects."""

from __future__ import annotations

import pytest

from careflow.executions.models import Execution
from careflow.forms.models import Form
from careflow.jobs.models import Job
from careflow.messages.models import Message
from tests.fixtures.database import count
from tests.fixtures.factories import (
    FIRST_VIDEO,
    GDPR_WELCOME,
    PATIENT,
    RULES,
    booked,
    create_rule,
    onboarded,
    post_event,
    rule_body,
)


async def _put(client, auth, entity_type: str, entity: dict, org: int = 1) -> None:
    response = await client.put(
        f"/v1/entities/{entity_type}/{entity['id']}", json=entity, headers=auth("admin", org=org)
    )
    assert response.status_code == 200, response.text


async def _side_effects(engine) -> tuple[int, ...]:
    return tuple([await count(engine, m) for m in (Execution, Form, Message, Job)])


class TestRuleTest:
    async def test_seed_example(self, client, auth, engine) -> None:
        created = await create_rule(client, auth, GDPR_WELCOME)
        await _put(client, auth, "patient", PATIENT)
        response = await client.post(
            f"{RULES}/{created['id']}/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": 100},
            headers=auth(),
        )
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["would_execute"] is True
        assert data["conditions_matched"] is True
        previews = data["actions_preview"]
        assert previews[0]["type"] == "require_form"
        assert previews[0]["form_template_id"] == 42
        assert previews[0]["blocking"] is True
        assert previews[0]["would_create_form"] is True
        assert previews[2]["type"] == "send_email"
        assert previews[2]["template"] == "welcome_patient"
        assert previews[2]["would_send_to"] == PATIENT["email"]
        assert await _side_effects(engine) == (0, 0, 0, 0)

    async def test_after_a_real_run_preview_reports_existing_form(
        self, client, auth, drain, engine
    ) -> None:
        created = await create_rule(client, auth, GDPR_WELCOME)
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain()
        before = await _side_effects(engine)
        response = await client.post(
            f"{RULES}/{created['id']}/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": "100"},
            headers=auth(),
        )
        assert response.status_code == 200
        assert response.json()["data"]["actions_preview"][0]["would_create_form"] is False
        assert await _side_effects(engine) == before

    async def test_conditions_on_joined_patient(self, client, auth, engine) -> None:
        created = await create_rule(
            client,
            auth,
            rule_body(FIRST_VIDEO, conditions={"appointment.type": "video", "patient.tags": "vip"}),
        )
        await _put(client, auth, "patient", PATIENT)
        await _put(client, auth, "appointment", booked(50)["appointment"])
        response = await client.post(
            f"{RULES}/{created['id']}/test",
            json={"trigger_entity_type": "appointment", "trigger_entity_id": 50},
            headers=auth(),
        )
        data = response.json()["data"]
        assert data["conditions_matched"] is False
        assert data["would_execute"] is False
        assert data["failed_conditions"] == ["patient.tags"]
        # The preview still says what each action would do if it ran.
        assert data["actions_preview"][1]["would_send_to"] == PATIENT["email"]

        await _put(client, auth, "patient", {**PATIENT, "tags": ["vip"]})
        response = await client.post(
            f"{RULES}/{created['id']}/test",
            json={"trigger_entity_type": "appointment", "trigger_entity_id": 50},
            headers=auth(),
        )
        assert response.json()["data"]["would_execute"] is True
        assert await _side_effects(engine) == (0, 0, 0, 0)

    async def test_disabled_rule_would_not_execute(self, client, auth) -> None:
        created = await create_rule(client, auth, rule_body(GDPR_WELCOME, enabled=False))
        await _put(client, auth, "patient", PATIENT)
        response = await client.post(
            f"{RULES}/{created['id']}/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": 100},
            headers=auth(),
        )
        data = response.json()["data"]
        assert data["conditions_matched"] is True
        assert data["would_execute"] is False

    async def test_unknown_entity(self, client, auth) -> None:
        created = await create_rule(client, auth, GDPR_WELCOME)
        await _put(client, auth, "patient", PATIENT, org=2)  # another org's patient
        response = await client.post(
            f"{RULES}/{created['id']}/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": 100},
            headers=auth(),
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "entity_not_found"

    async def test_unknown_rule_and_other_org(self, client, auth) -> None:
        created = await create_rule(client, auth, GDPR_WELCOME)
        await _put(client, auth, "patient", PATIENT, org=2)
        for path, org in (
            (f"{RULES}/{created['id'] + 1}/test", 1),
            (f"{RULES}/{created['id']}/test", 2),
        ):
            response = await client.post(
                path,
                json={"trigger_entity_type": "patient", "trigger_entity_id": 100},
                headers=auth("admin", org=org),
            )
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "automation_rule_not_found"

    @pytest.mark.parametrize("role", ["specialist", "patient", "support", "service"])
    async def test_admin_only(self, client, auth, role) -> None:
        created = await create_rule(client, auth, GDPR_WELCOME)
        response = await client.post(
            f"{RULES}/{created['id']}/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": 100},
            headers=auth(role),
        )
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"trigger_entity_type": "doctor", "trigger_entity_id": 1}, "trigger_entity_type"),
            ({"trigger_entity_type": "patient", "trigger_entity_id": True}, "trigger_entity_id"),
            ({"trigger_entity_type": "patient"}, "trigger_entity_id"),
            ({"trigger_entity_type": "patient", "trigger_entity_id": 1, "x": 1}, "x"),
        ],
    )
    async def test_invalid_body(self, client, auth, body, field) -> None:
        created = await create_rule(client, auth, GDPR_WELCOME)
        response = await client.post(f"{RULES}/{created['id']}/test", json=body, headers=auth())
        assert response.status_code == 400
        assert field in [d["field"] for d in response.json()["error"]["details"]]


class TestMessagePreviewTemplate:
    """The preview looks the template up and renders it, as a real run would."""

    async def _rule_with_own_template(
        self, client, auth, body: str, channel: str = "email", key: str = "clinic_hello"
    ) -> int:
        template = {"subject": "Hello", "body": body} if channel == "email" else {"body": body}
        response = await client.put(f"/v1/templates/{channel}/{key}", json=template, headers=auth())
        assert response.status_code == 201, response.text
        created = await create_rule(
            client,
            auth,
            rule_body(GDPR_WELCOME, actions=[{"type": f"send_{channel}", "template": key}]),
        )
        await _put(client, auth, "patient", PATIENT)
        return int(created["id"])

    async def _preview(self, client, auth, rule_id: int) -> dict:
        response = await client.post(
            f"{RULES}/{rule_id}/test",
            json={"trigger_entity_type": "patient", "trigger_entity_id": 100},
            headers=auth(),
        )
        assert response.status_code == 200, response.text
        return response.json()["data"]["actions_preview"][0]

    async def test_own_template_renders(self, client, auth) -> None:
        rule_id = await self._rule_with_own_template(client, auth, "Hi {{ patient.first_name }}")
        preview = await self._preview(client, auth, rule_id)
        assert preview["would_send_to"] == PATIENT["email"]
        assert "error" not in preview

    async def test_template_deleted_since_the_rule_was_saved(self, client, auth, engine) -> None:
        rule_id = await self._rule_with_own_template(client, auth, "Hi")
        deleted = await client.delete("/v1/templates/email/clinic_hello", headers=auth())
        assert deleted.status_code == 204
        preview = await self._preview(client, auth, rule_id)
        assert preview["would_send_to"] is None
        assert preview["error"] == "unknown email template 'clinic_hello'"
        assert await _side_effects(engine) == (0, 0, 0, 0)

    async def test_sms_template_deleted_since_the_rule_was_saved(self, client, auth) -> None:
        rule_id = await self._rule_with_own_template(client, auth, "Hi", "sms", "clinic_text")
        assert (await self._preview(client, auth, rule_id))["would_send_to"] == PATIENT["phone"]
        deleted = await client.delete("/v1/templates/sms/clinic_text", headers=auth())
        assert deleted.status_code == 204
        preview = await self._preview(client, auth, rule_id)
        assert preview["would_send_to"] is None
        assert preview["error"] == "unknown sms template 'clinic_text'"

    async def test_template_that_fails_on_this_context(self, client, auth) -> None:
        # Saved, since it renders on the sample patient; this patient's data breaks it.
        body = "{% if patient.id == 100 %}{{ 1 // 0 }}{% endif %}Hi"
        rule_id = await self._rule_with_own_template(client, auth, body)
        preview = await self._preview(client, auth, rule_id)
        assert preview["would_send_to"] is None
        assert (
            preview["error"]
            == "template 'clinic_hello' failed to render: template error: ZeroDivisionError"
        )
