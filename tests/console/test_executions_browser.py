"""The executions pages in a real Chromium: an execution posted over the API appears in the
list, its timeline shows each action's status, and a failed execution retried from its
page completes once the fault is gone. Screenshots for docs/console.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.console.conftest import Visit
from tests.fixtures.factories import (
    GDPR_WELCOME,
    PATIENT,
    create_rule,
    executions,
    onboarded,
    post_event,
    rule_body,
)


async def test_an_execution_appears_with_its_timeline(
    client: Any, auth: Any, drain: Any, signed_in: Callable[..., Any]
) -> None:
    conditions = {"patient.id": {"gte": 1}, "not": {"patient.tags": "test"}}
    await create_rule(client, auth, rule_body(GDPR_WELCOME, conditions=conditions))
    await post_event(client, auth, "patient.onboarded", onboarded({**PATIENT, "id": 100}))
    await drain()
    [row] = await executions(client, auth)

    visit: Visit = await signed_in("admin")
    await visit.goto("/console/executions")
    page = visit.page
    await page.get_by_label("Patient id").fill("100")
    await page.get_by_role("button", name="Filter", exact=True).click()
    await page.wait_for_url("**patient_id=100**")
    link = page.get_by_role("link", name=f"#{row['id']}", exact=True)
    await link.wait_for()
    await visit.screenshot("executions")

    await link.click()
    await page.wait_for_url(f"**/console/executions/{row['id']}")
    await page.get_by_role("heading", name="Event received").wait_for()
    conditions_step = page.locator("ul.checks").first
    assert "patient.id" in await conditions_step.inner_text()
    for index, action in enumerate(row["actions_executed"]):
        step = page.locator(f"#action-{index}")
        heading = await step.get_by_role("heading").inner_text()
        assert action["action"] in heading
        assert "success" in heading
    await visit.screenshot("execution-timeline")

    await page.get_by_role("link", name="100", exact=True).first.click()
    await page.wait_for_url("**/console/patients/100")
    await page.get_by_role("heading", name="Journey").wait_for()
    await visit.screenshot("patient-journey")


async def test_retrying_a_failed_execution_in_the_browser(
    client: Any, auth: Any, drain: Any, smtp: Any, signed_in: Callable[..., Any]
) -> None:
    await create_rule(client, auth, GDPR_WELCOME)
    smtp.sink.fail_next = 1000  # the SMTP server refuses every message
    await post_event(client, auth, "patient.onboarded", onboarded({**PATIENT, "id": 100}))
    await post_event(client, auth, "patient.onboarded", onboarded({**PATIENT, "id": 101}))
    await drain(until_settled=True)
    failed = await executions(client, auth, status="partial_failure")
    assert len(failed) == 2
    smtp.sink.fail_next = 0  # the fault is gone

    visit: Visit = await signed_in("admin")
    page = visit.page
    # Bulk retry asks first, with the count.
    await visit.goto("/console/executions?status=partial_failure")
    await page.get_by_role("button", name="Retry the failed executions of this filter…").click()
    await page.get_by_text("Retry 2 failed executions?").wait_for()
    await visit.screenshot("executions-bulk-retry")

    # One execution retried from its own page.
    target = failed[0]["id"]
    await visit.goto(f"/console/executions/{target}")
    assert "failure" in await page.locator("#action-2").get_by_role("heading").inner_text()
    await page.get_by_role("button", name="Retry", exact=True).click()
    await page.get_by_role("status").wait_for()
    await drain()
    await page.reload()
    heading = await page.get_by_role("heading", level=1).inner_text()
    assert "success" in heading
    assert "success" in await page.locator("#action-2").get_by_role("heading").inner_text()
    assert len(smtp.sink.messages) == 1
