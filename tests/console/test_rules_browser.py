"""The rules pages in a real browser: editing a rule through the generated form, with the
API's error shown beside the field, then fixed and saved; the dry-run through htmx; what a
specialist sees and a hand-made POST of theirs refused; the pathway rules and the explainer.
The screenshots docs/console.md shows are taken here."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from tests.console.conftest import Visit
from tests.fixtures.factories import (
    FIRST_VIDEO,
    GDPR_WELCOME,
    PATIENT,
    RULES,
    create_pathway_rule,
    create_rule,
)

Auth = Callable[..., dict[str, str]]


async def test_editing_a_rule_with_an_error_then_fixed(
    signed_in: Callable[..., Any], client: httpx.AsyncClient, auth: Auth
) -> None:
    rule = await create_rule(client, auth, GDPR_WELCOME)
    await create_rule(client, auth, FIRST_VIDEO)
    await create_rule(client, auth, name="Dormant welcome", enabled=False)
    put = await client.put(f"/v1/entities/patient/{PATIENT['id']}", json=PATIENT, headers=auth())
    assert put.status_code == 200
    visit: Visit = await signed_in("admin")
    page = visit.page
    await visit.goto("/console/rules")
    await visit.screenshot("rules")
    await page.get_by_role("link", name="New Patient GDPR & Welcome").click()
    await page.wait_for_url(visit.server.at(f"/console/rules/{rule['id']}"))

    conditions = page.get_by_label("Conditions (JSON)")
    await conditions.fill('{"appointment.type": "video"}')
    await page.get_by_label("Name").fill("GDPR & welcome for tagged patients")
    await page.get_by_role("button", name="Save rule").click()
    error = page.locator("#conditions-error")
    await error.wait_for()
    assert "conditions.appointment.type" in await error.inner_text()
    assert await conditions.get_attribute("aria-invalid") == "true"
    await visit.screenshot("rule-edit")

    await conditions.fill('{"patient.tags": "new"}')
    await page.get_by_role("button", name="Save rule").click()
    await page.get_by_role("status").filter(has_text="Saved.").wait_for()
    saved = (await client.get(f"{RULES}/{rule['id']}", headers=auth())).json()["data"]
    assert saved["conditions"] == {"patient.tags": "new"}
    assert saved["name"] == "GDPR & welcome for tagged patients"

    # The dry-run, through htmx: the preview replaces the result area only.
    await page.get_by_label("Entity id").fill("100")
    await page.get_by_role("button", name="Run test").click()
    result = page.locator("#test-result")
    await result.get_by_text("Would not run").wait_for()
    assert "patient.tags" in await result.inner_text()
    assert page.url.endswith(f"/console/rules/{rule['id']}?saved=1")

    # A new rule's form redraws with the fields of the trigger and action type chosen.
    await visit.goto("/console/rules/new")
    await page.get_by_label("Trigger event").select_option("appointment.before_start")
    hours = page.get_by_label("Hours before")
    await hours.wait_for()
    assert (await hours.get_attribute("min"), await hours.get_attribute("max")) == ("1", "168")
    await page.get_by_label("Action 1 type").select_option("update_segment")
    await page.get_by_label("Segment id (required)").wait_for()


async def test_a_specialist_sees_no_write_button_and_a_hand_made_post_is_refused(
    signed_in: Callable[..., Any], client: httpx.AsyncClient, auth: Auth
) -> None:
    rule = await create_rule(client, auth)
    visit: Visit = await signed_in("specialist")
    page = visit.page
    await visit.goto("/console/rules")
    assert await page.get_by_role("link", name="Welcome").count() == 1
    assert await page.get_by_role("button").all_inner_texts() == ["Sign out", "Filter"]
    assert await page.get_by_role("link", name="New rule").count() == 0
    await page.get_by_role("link", name="Welcome").click()
    await page.wait_for_url(visit.server.at(f"/console/rules/{rule['id']}"))
    assert await page.get_by_role("button").all_inner_texts() == ["Sign out"]
    assert await page.get_by_label("Name").is_disabled()

    # The same session's cookie and a valid CSRF token, posted by hand.
    csrf = await page.locator('input[name="csrf_token"]').first.input_value()
    assert csrf
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    async with httpx.AsyncClient(base_url=visit.server.url, cookies=cookies) as by_hand:
        readable = await by_hand.get(f"/console/rules/{rule['id']}")
        assert readable.status_code == 200  # the session is good
        refused = await by_hand.post(
            f"/console/rules/{rule['id']}/enabled",
            data={"csrf_token": csrf, "enabled": "false"},
        )
        assert refused.status_code == 403
    got = (await client.get(f"{RULES}/{rule['id']}", headers=auth())).json()["data"]
    assert got["enabled"] is True


async def test_pathway_rules_and_the_explainer(
    signed_in: Callable[..., Any], client: httpx.AsyncClient, auth: Auth
) -> None:
    await create_pathway_rule(client, auth)
    await create_pathway_rule(
        client,
        auth,
        rule_name="Video bookings → video team",
        priority=1,
        conditions={"appointment_types": ["video"]},
        suggested_assignment="video_team",
        suggested_priority="high",
    )
    await create_pathway_rule(
        client,
        auth,
        trigger_type="invoice.overdue",
        rule_name="Overdue invoices stay with billing",
        conditions=None,
        suggested_assignment="billing_lead",
        suggested_priority=None,
    )
    visit: Visit = await signed_in("admin")
    page = visit.page
    await visit.goto("/console/pathway-rules")
    await page.get_by_role("heading", name=re.compile("appointment.booked")).wait_for()
    await visit.screenshot("pathway-rules")
    await page.get_by_role("link", name="Explain a routing").click()
    await page.get_by_label("Sample payload (JSON)").fill(
        '{"appointment": {"id": "apt_7", "type": "video", "appointment_type_id": "type_follow_up"}}'
    )
    await page.get_by_role("button", name="Explain").click()
    matched = page.get_by_role("status").filter(has_text="Matched")
    await matched.wait_for()
    assert "Video bookings → video team" in await matched.inner_text()
    assert await page.get_by_text("appointment.appointment_type_id is").count() == 1
    await visit.screenshot("pathway-resolve")
