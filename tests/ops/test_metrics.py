"""Prometheus metrics move with the work: events, executions, actions, jobs, lag."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from tests.conftest import Drain
from tests.fixtures.factories import GDPR_WELCOME, create_rule, onboarded, post_event

Auth = Callable[..., dict[str, str]]


def sample(text: str, name: str, labels: str = "") -> float:
    pattern = re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class TestMetrics:
    async def test_counters_follow_an_event_through_the_engine(
        self, client: httpx.AsyncClient, auth: Auth, drain: Drain
    ) -> None:
        before = (await client.get("/metrics")).text
        await create_rule(client, auth, GDPR_WELCOME)
        await post_event(client, auth, "patient.onboarded", onboarded())
        await drain(until_settled=True)
        after = (await client.get("/metrics")).text

        def delta(name: str, labels: str = "") -> float:
            return sample(after, name, labels) - sample(before, name, labels)

        assert delta("careflow_events_ingested_total", 'type="patient.onboarded"') == 1
        assert delta("careflow_executions_total", 'status="success"') == 1
        assert delta("careflow_actions_total", 'status="success",type="require_form"') == 2
        assert delta("careflow_actions_total", 'status="success",type="send_email"') == 1
        assert delta("careflow_jobs_total", 'kind="dispatch_event",outcome="done"') == 1
        # The dispatch runs both forms itself; the email is the second job.
        assert delta("careflow_job_lag_seconds_count") == 2
        assert 'route="/v1/events"' in after
        # Route templates, never raw paths with ids in them.
        assert 'route="/v1/automations/rules/1"' not in after
