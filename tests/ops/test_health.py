from __future__ import annotations

from typing import Any

import httpx
import pytest


class TestHealth:
    async def test_healthz_needs_no_token(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "ok"}
        assert r.headers["x-request-id"].startswith("req_")

    async def test_readyz_reports_migrations_at_head(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["migrations"]["current"] == body["migrations"]["head"]

    async def test_head_probes_answer_like_the_gets_without_a_body(
        self, client: httpx.AsyncClient
    ) -> None:
        for path in ("/healthz", "/readyz"):
            r = await client.head(path)
            assert (r.status_code, r.content) == (200, b""), path
            assert r.headers["x-request-id"].startswith("req_")
        schema = (await client.get("/openapi.json")).json()
        assert set(schema["paths"]["/healthz"]) == {"get"}

    @pytest.mark.parametrize(
        "given",
        [
            "abc-123",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "trace/abc",
            "x" * 200,
        ],
    )
    async def test_request_id_is_echoed(self, client: httpx.AsyncClient, given: str) -> None:
        r = await client.get("/healthz", headers={"X-Request-ID": given})
        assert r.headers["x-request-id"] == given

    @pytest.mark.parametrize("given", [b"two words", b"x" * 201, "caf\u00e9".encode("latin-1")])
    async def test_an_unusable_request_id_is_replaced(
        self, client: httpx.AsyncClient, given: bytes
    ) -> None:
        r = await client.get("/healthz", headers={"X-Request-ID": given})
        assert r.headers["x-request-id"].startswith("req_")

    async def test_unknown_route_uses_the_automations_envelope(
        self, client: httpx.AsyncClient
    ) -> None:
        r = await client.get("/v1/nothing-here")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"

    async def test_metrics_are_prometheus_text(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/metrics")
        assert r.status_code == 200
        assert "careflow_events_ingested_total" in r.text

    async def test_http_latency_is_labelled_by_route_template(
        self, client: httpx.AsyncClient
    ) -> None:
        await client.get("/healthz")
        r = await client.get("/metrics")
        assert (
            'careflow_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}'
            in r.text
        )

    async def test_queue_depth_is_sampled_where_no_worker_runs(
        self, client: httpx.AsyncClient, auth: Any
    ) -> None:
        """`serve --no-worker`: the API's /metrics reads the queue itself at each scrape."""
        body = {"type": "patient.onboarded", "data": {"patient": {"id": 100}}}
        for _ in range(2):
            r = await client.post("/v1/events", json=body, headers=auth("service"))
            assert r.status_code == 202
        r = await client.get("/metrics")
        assert 'careflow_queue_depth{status="queued"} 2.0' in r.text
        assert 'careflow_queue_depth{status="dead"} 0.0' in r.text
        # The same scrape reads each organisation's due jobs (the clock is frozen: age 0).
        assert 'careflow_queue_due_jobs{organization="1"} 2.0' in r.text
        assert 'careflow_queue_due_jobs{organization="other"} 0.0' in r.text
        assert 'careflow_queue_oldest_due_seconds{organization="1"} 0.0' in r.text
