"""The executions pages and a patient's journey over plain HTTP: filters, the patient
filter, the timeline's contents, retry and bulk retry with their audit entries, the
journey's contents and order, and another organisation's rows answering 404."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from careflow.console.pages.executions import BULK_LIMIT
from tests.console.test_sign_in import CSRF, login_form
from tests.fixtures.factories import (
    EXECUTIONS,
    GDPR_WELCOME,
    PATIENT,
    SEED_GDPR_WELCOME,
    create_rule,
    executions,
    onboarded,
    post_event,
    rule_body,
)

ROW = re.compile(r'<a href="/console/executions/(\d+)">#\d+</a>')


async def sign_in(client: httpx.AsyncClient, token: Callable[..., str], role: str = "admin",
                  org: int = 1) -> str:  # fmt: skip
    """Signs the client in to the console; returns the session's CSRF token."""
    csrf = await login_form(client)
    answer = await client.post(
        "/console/login", data={"token": token(role, org), "csrf_token": csrf}
    )
    assert answer.status_code == 303
    page = await client.get("/console/executions")
    found = CSRF.search(page.text)
    assert found is not None
    return found.group(1)


async def onboard(client: httpx.AsyncClient, auth: Any, patient_id: Any, org: int = 1) -> None:
    await post_event(
        client, auth, "patient.onboarded", onboarded({**PATIENT, "id": patient_id}), org=org
    )


def seconds(found: re.Match[str] | None) -> float:
    """A duration as the timeline shows it ("131 ms", "119.9 s"), in seconds."""
    assert found is not None
    number, unit = found.group(1).split()
    return float(number) / (1000 if unit == "ms" else 1)


def listed(page: httpx.Response) -> list[int]:
    assert page.status_code == 200, page.text
    return [int(i) for i in ROW.findall(page.text)]


async def failed_executions(client, auth, drain, smtp, patients: list[int]) -> list[int]:
    await create_rule(client, auth, GDPR_WELCOME)
    smtp.sink.fail_next = 1000
    for patient in patients:
        await onboard(client, auth, patient)
    await drain(until_settled=True)
    smtp.sink.fail_next = 0
    rows = await executions(client, auth, status="partial_failure")
    assert len(rows) == len(patients)
    return [r["id"] for r in rows]


class TestList:
    async def test_filters_and_the_patient_filter(self, client, auth, token, drain, clock) -> None:
        welcome = await create_rule(client, auth, GDPR_WELCOME)
        vip = await create_rule(
            client, auth, rule_body(GDPR_WELCOME, name="VIP", conditions={"patient.tags": "vip"})
        )
        await onboard(client, auth, 100)
        await drain()
        clock.advance(days=1)
        await onboard(client, auth, "200")
        await drain()
        await sign_in(client, token, "specialist")
        api = {r["id"]: r for r in await executions(client, auth)}

        everything = listed(await client.get("/console/executions"))
        assert sorted(everything) == sorted(api)
        by_rule = listed(
            await client.get("/console/executions", params={"automation_rule_id": vip["id"]})
        )
        assert {api[i]["automation_rule_id"] for i in by_rule} == {vip["id"]}
        success = listed(await client.get("/console/executions", params={"status": "success"}))
        assert {api[i]["automation_rule_id"] for i in success} == {welcome["id"]}
        day = listed(await client.get("/console/executions", params={"from_date": "2025-02-16"}))
        assert {api[i]["trigger_entity_id"] for i in day} == {200}
        none = listed(
            await client.get("/console/executions", params={"trigger_event": "appointment.booked"})
        )
        assert none == []

        # The patient filter: "200" and 200 are one patient; the patient links to the journey.
        patient = await client.get("/console/executions", params={"patient_id": "200"})
        assert {api[i]["trigger_entity_id"] for i in listed(patient)} == {200}
        assert len(listed(patient)) == 2
        assert 'href="/console/patients/200"' in patient.text
        # A specialist sees no write button.
        assert "Retry the failed executions" not in patient.text

    async def test_bad_filters_are_shown_beside_their_fields(self, client, token) -> None:
        await sign_in(client, token)
        page = await client.get(
            "/console/executions",
            params={"status": "done", "from_date": "yesterday", "automation_rule_id": "x"},
        )
        assert page.status_code == 400
        assert 'id="status-error"' in page.text
        assert 'id="from_date-error"' in page.text
        assert 'id="automation_rule_id-error"' in page.text

    async def test_the_patient_filter_in_the_service(self, client, auth, drain, token) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        await onboard(client, auth, 7)
        await onboard(client, auth, 8)
        await drain()
        await sign_in(client, token)
        only = listed(await client.get("/console/executions", params={"patient_id": "7"}))
        assert len(only) == 1
        detail = await client.get(f"/console/executions/{only[0]}")
        assert 'href="/console/patients/7"' in detail.text


class TestTimeline:
    async def test_event_conditions_and_actions(self, client, auth, token, drain) -> None:
        rule = await create_rule(
            client,
            auth,
            rule_body(
                GDPR_WELCOME,
                conditions={
                    "all": [{"patient.id": {"gte": 1}}, {"patient.tags": {"exists": False}}]
                },
            ),
        )
        await onboard(client, auth, 100)
        await drain()
        [row] = await executions(client, auth)
        await sign_in(client, token, "specialist")
        page = await client.get(f"/console/executions/{row['id']}")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert "Event received" in text and "patient.onboarded" in text
        assert "all of" in text and "patient.id" in text and "matched" in text
        assert rule["name"] in text
        # Each action with its status and what it produced.
        for index, action in enumerate(row["actions_executed"]):
            assert f'id="action-{index}"' in page.text
            assert action["action"] in text
        assert text.count("Attempts") == 3
        email_id = row["actions_executed"][2]["email_id"]
        assert email_id in text
        assert "delivery" in text
        form_ids = [a["form_id"] for a in row["actions_executed"][:2]]
        for form_id in form_ids:
            assert f'<span class="mono">{form_id}</span>' in page.text
        assert "Waiting" in text and "Running" in text
        # A specialist may not retry.
        assert "/retry" not in page.text

    async def test_a_delayed_action_waits_apart_from_running(
        self, client, auth, token, drain, clock
    ) -> None:
        await create_rule(client, auth, SEED_GDPR_WELCOME)  # the email 5 minutes later
        await onboard(client, auth, 100)
        await drain()
        [row] = await executions(client, auth)
        await sign_in(client, token)
        page = await client.get(f"/console/executions/{row['id']}")
        email = page.text.split('id="action-2"')[1]
        assert '<span class="badge queued">queued</span>' in email
        assert "runs at <time" in email and "10:05:00" in email
        assert "attempt 0 of" in email

        clock.advance(minutes=7)  # the worker runs it two minutes after it was due
        await drain()
        page = await client.get(f"/console/executions/{row['id']}")
        email = page.text.split('id="action-2"')[1]
        assert '<span class="badge success">success</span>' in email
        assert "Job #" not in email
        facts = re.sub(r"\s+", " ", email)
        assert "<dt>Due</dt><dd><time" in facts and "2025-02-15 10:05:00" in facts
        # Waiting: from due (10:05) to the start of the run (10:07 less its running time).
        waiting = seconds(re.search(r"<dt>Waiting</dt><dd>([\d.]+ m?s)</dd>", facts))
        running = seconds(re.search(r"<dt>Running</dt><dd>([\d.]+ m?s)</dd>", facts))
        assert waiting == pytest.approx(120 - running, abs=0.1)
        assert "<dt>Finished</dt><dd><time" in facts and "2025-02-15 10:07:00" in facts

    async def test_a_failed_condition_is_shown_failed(self, client, auth, token, drain) -> None:
        await create_rule(client, auth, rule_body(GDPR_WELCOME, conditions={"patient.tags": "vip"}))
        await onboard(client, auth, 100)
        await drain()
        [row] = await executions(client, auth)
        assert row["status"] == "skipped"
        await sign_in(client, token)
        page = await client.get(f"/console/executions/{row['id']}")
        assert '<span class="badge failure">failed</span>' in page.text
        assert "absent" in page.text

    async def test_another_organisations_execution_is_a_404_page(
        self, client, auth, token, drain
    ) -> None:
        await create_rule(client, auth, GDPR_WELCOME, org=2)
        await onboard(client, auth, 100, org=2)
        await drain()
        theirs = await client.get(EXECUTIONS, headers=auth("admin", org=2))
        [row] = theirs.json()["data"]
        csrf = await sign_in(client, token)
        page = await client.get(f"/console/executions/{row['id']}")
        assert page.status_code == 404
        assert "text/html" in page.headers["content-type"]
        assert listed(await client.get("/console/executions")) == []
        retry = await client.post(
            f"/console/executions/{row['id']}/retry", data={"csrf_token": csrf}
        )
        assert retry.status_code == 404
        journey = await client.get("/console/patients/100")
        assert f"/console/executions/{row['id']}" not in journey.text


class TestRetry:
    async def test_retry_one_is_audited_and_specialists_are_refused(
        self, client, auth, token, drain, smtp
    ) -> None:
        [failed] = await failed_executions(client, auth, drain, smtp, [100])
        csrf = await sign_in(client, token, "specialist")
        refused = await client.post(
            f"/console/executions/{failed}/retry", data={"csrf_token": csrf}
        )
        assert refused.status_code == 403
        client.cookies.clear()
        csrf = await sign_in(client, token, "admin")
        assert "Retry" in (await client.get(f"/console/executions/{failed}")).text
        no_csrf = await client.post(f"/console/executions/{failed}/retry")
        assert no_csrf.status_code == 403
        answer = await client.post(f"/console/executions/{failed}/retry", data={"csrf_token": csrf})
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/console/executions/{failed}?retried=1"
        await drain()
        [row] = await executions(client, auth)
        assert row["status"] == "success"
        log = (await client.get("/v1/audit-log", headers=auth())).json()["data"]
        entries = [e for e in log if e["action"] == "retry"]
        assert len(entries) == 1
        assert entries[0]["object_type"] == "execution"
        assert str(entries[0]["object_id"]) == str(failed)
        assert entries[0]["after"]["via"] == "console"
        # Not retryable any more: a 409 page.
        again = await client.post(f"/console/executions/{failed}/retry", data={"csrf_token": csrf})
        assert again.status_code == 409

    async def test_bulk_retry_counts_then_runs_on_confirmation(
        self, client, auth, token, drain, smtp
    ) -> None:
        failed = await failed_executions(client, auth, drain, smtp, [1, 2, 3])
        csrf = await sign_in(client, token)
        listing = await client.get("/console/executions", params={"status": "partial_failure"})
        assert f"At most {BULK_LIMIT:,} per request" in listing.text

        # The first POST only counts.
        form = {"csrf_token": csrf, "patient_id": "", "status": ""}
        ask = await client.post("/console/executions/retry", data=form)
        assert ask.status_code == 200
        assert "Retry 3 failed executions?" in ask.text
        assert 'name="confirmed" value="3"' in ask.text
        assert len(await executions(client, auth, status="partial_failure")) == 3

        # A filter narrows what is counted.
        one = await client.post("/console/executions/retry", data={**form, "patient_id": "2"})
        assert "Retry 1 failed execution?" in one.text

        # A stale count is asked again, not run.
        stale = await client.post("/console/executions/retry", data={**form, "confirmed": "5"})
        assert "changed since" in stale.text
        assert len(await executions(client, auth, status="partial_failure")) == 3

        done = await client.post("/console/executions/retry", data={**form, "confirmed": "3"})
        assert done.status_code == 303
        assert done.headers["location"] == "/console/executions?retried=3"
        assert "Retried 3 failed executions." in (await client.get(done.headers["location"])).text
        await drain()
        assert {r["status"] for r in await executions(client, auth)} == {"success"}
        log = (await client.get("/v1/audit-log", headers=auth())).json()["data"]
        retried = sorted(int(e["object_id"]) for e in log if e["action"] == "retry")
        assert retried == sorted(failed)
        assert all(e["after"]["bulk"] is True for e in log if e["action"] == "retry")

        # Nothing left to retry.
        empty = await client.post("/console/executions/retry", data=form)
        assert "No failed execution matches" in empty.text

    async def test_bulk_retry_is_for_admins(self, client, token) -> None:
        csrf = await sign_in(client, token, "specialist")
        refused = await client.post("/console/executions/retry", data={"csrf_token": csrf})
        assert refused.status_code == 403


class TestJourney:
    async def test_everything_of_the_patient_in_time_order(
        self, client, auth, token, drain, clock
    ) -> None:
        await create_rule(client, auth, GDPR_WELCOME)
        await onboard(client, auth, 100)
        await drain()
        clock.advance(hours=1)
        await onboard(client, auth, 999)  # another patient: not on the page
        await drain()
        [row] = [r for r in await executions(client, auth) if r["trigger_entity_id"] == 100]
        clock.advance(hours=1)  # the patient signs the consent form
        form_id = row["actions_executed"][0]["form_id"]
        signed = await client.post(f"/v1/forms/{form_id}/complete", headers=auth("service"))
        assert signed.status_code == 200, signed.text
        await drain()
        await sign_in(client, token, "specialist")
        page = await client.get("/console/patients/100")
        assert page.status_code == 200
        text = html.unescape(page.text)
        kinds = re.findall(r'<span class="kind">([a-z ]+)</span>', page.text)
        # The event first, then the episode it opened, its execution, the forms that opened,
        # the email it sent; two hours later, the form completed.
        assert kinds[:6] == ["event", "episode", "execution", "form", "form", "message"]
        assert "form completed" in kinds[6:]
        times = re.findall(r'<li class="entry [^"]+">\s*<time datetime="([^"]+)"', page.text)
        assert len(times) == len(kinds)
        assert times == sorted(times)
        assert times[0].startswith("2025-02-15T10:00") and times[-1].startswith("2025-02-15T12:00")
        assert re.search(r'href="/console/inbox/\d+">episode \d+', page.text)
        assert f'href="/console/executions/{row["id"]}"' in page.text
        assert f'href="/console/executions/{row["id"]}#event"' in page.text
        assert f'href="/console/executions/{row["id"]}#action-2"' in page.text
        assert row["actions_executed"][2]["email_id"] in text
        # The gate: the consent form blocks.
        assert "Blocked" in text
        assert "patient.onboarded" in text
        other = [r for r in await executions(client, auth) if r["trigger_entity_id"] == 999]
        assert f"/console/executions/{other[0]['id']}" not in page.text

    async def test_an_unknown_patient_has_an_empty_journey(self, client, token) -> None:
        await sign_in(client, token)
        page = await client.get("/console/patients/nobody")
        assert page.status_code == 200
        assert "careflow holds nothing for this patient" in page.text
        assert "Not blocked" in page.text
