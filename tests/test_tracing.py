"""Traces (``careflow.tracing``): one ingested event is one trace, from the request that
accepted it to the SMTP send of its email, and no span carries patient data.

Once with an in-memory exporter (every span, as it ends), once with the real OTLP/HTTP
exporter against a receiver in the test that decodes what arrives with opentelemetry-proto.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from careflow import tracing
from careflow.app import create_app
from careflow.config import Settings
from careflow.jobs.models import Job
from careflow.jobs.worker import Worker
from careflow.kit.clock import FrozenClock
from tests.conftest import make_settings
from tests.fixtures.factories import EVENTS, PATIENT, Auth, create_rule, onboarded
from tests.fixtures.smtp import SmtpServer

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
REQUEST_ID = "req-trace-test-1"
# What the patient's data holds that must appear in no span.
PATIENT_VALUES = (PATIENT["email"], PATIENT["phone"])


@pytest.fixture
def traced_settings(database_url: str, smtp: SmtpServer) -> Settings:
    return make_settings(database_url, smtp_url=smtp.url, tracing="otlp")


@pytest.fixture
def exporter(traced_settings: Settings) -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.configure_tracing(traced_settings, exporter=memory)
    yield memory
    tracing.shut_down()


def traced_app(settings: Settings, engine: AsyncEngine, clock: FrozenClock) -> FastAPI:
    return create_app(settings, engine=engine, clock=clock, migrate_sqlite=False)


@pytest.fixture
async def traced_client(
    traced_settings: Settings, engine: AsyncEngine, clock: FrozenClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = traced_app(traced_settings, engine, clock)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://careflow.test") as c:
        yield c


async def post_welcomed_patient(client: httpx.AsyncClient, auth: Auth) -> None:
    """A welcome-email rule, then one onboarding event sent inside the caller's trace."""
    await create_rule(client, auth)
    response = await client.post(
        EVENTS,
        json={"type": "patient.onboarded", "data": onboarded()},
        headers={**auth("service"), "traceparent": TRACEPARENT, "X-Request-ID": REQUEST_ID},
    )
    assert response.status_code == 202, response.text


async def drain(client: httpx.AsyncClient, settings: Settings, clock: FrozenClock) -> None:
    app: Any = client._transport.app  # type: ignore[attr-defined]
    worker = Worker(app.state.sessionmaker, settings, clock, services=app.state.services)
    assert await worker.run_until_idle() >= 2  # the dispatch and the email step


def one_of(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in spans if span.name == name]
    assert len(found) == 1, (name, [span.name for span in spans])
    return found[0]


def values_of(span: ReadableSpan) -> list[str]:
    """Every attribute value of a span and of its events, as text."""
    attributes = [dict(span.attributes or {})] + [dict(e.attributes or {}) for e in span.events]
    return [str(value) for group in attributes for value in group.values()]


class TestOneEventOneTrace:
    async def test_request_dispatch_action_and_smtp_spans_are_one_trace(
        self,
        exporter: InMemorySpanExporter,
        traced_client: httpx.AsyncClient,
        traced_settings: Settings,
        clock: FrozenClock,
        auth: Auth,
        smtp: SmtpServer,
    ) -> None:
        await post_welcomed_patient(traced_client, auth)
        await drain(traced_client, traced_settings, clock)
        assert [m.rcpt_tos for m in smtp.sink.messages] == [[PATIENT["email"]]]

        spans = exporter.get_finished_spans()
        trace = [span for span in spans if span.context.trace_id == int(TRACE_ID, 16)]
        request = one_of(trace, "POST /v1/events")
        dispatch = one_of(trace, "job dispatch_event")
        action = one_of(trace, "job run_action")
        send = one_of(trace, "smtp send")
        # Each a child of the one before: the caller's span, the request, its dispatch, the
        # email step the dispatch enqueued, the send.
        assert request.kind is SpanKind.SERVER
        assert request.parent is not None and request.parent.span_id == int(CALLER_SPAN, 16)
        assert dispatch.parent is not None and dispatch.parent.span_id == request.context.span_id
        assert action.parent is not None and action.parent.span_id == dispatch.context.span_id
        assert send.parent is not None and send.parent.span_id == action.context.span_id
        assert dispatch.kind is action.kind is SpanKind.CONSUMER
        assert send.kind is SpanKind.CLIENT

        # Ids and statuses.
        assert request.attributes is not None and dispatch.attributes is not None
        assert request.attributes["careflow.request_id"] == REQUEST_ID
        status = request.attributes.get(
            "http.status_code", request.attributes.get("http.response.status_code")
        )
        assert status == 202
        assert dispatch.attributes["careflow.request_id"] == REQUEST_ID
        assert dispatch.attributes["careflow.job.kind"] == "dispatch_event"
        assert dispatch.attributes["careflow.organization_id"] == 1
        assert send.attributes is not None
        assert str(send.attributes["careflow.message_id"]).startswith("exec-")
        # The step's SQL is traced under its job.
        sql = [
            span for span in trace if span.parent and span.parent.span_id == action.context.span_id
        ]
        assert any("db.system" in (span.attributes or {}) for span in sql), [s.name for s in sql]

        # No span of any trace holds the patient's data: not as an attribute, not as a
        # statement's bound value.
        for span in spans:
            for value in values_of(span):
                for secret in PATIENT_VALUES:
                    assert secret not in value, (span.name, value)

    async def test_a_failed_send_is_an_error_span_without_the_message(
        self,
        exporter: InMemorySpanExporter,
        traced_client: httpx.AsyncClient,
        traced_settings: Settings,
        clock: FrozenClock,
        auth: Auth,
        smtp: SmtpServer,
    ) -> None:
        smtp.sink.fail_next = 1
        await post_welcomed_patient(traced_client, auth)
        await drain(traced_client, traced_settings, clock)

        spans = exporter.get_finished_spans()
        [send] = [span for span in spans if span.name == "smtp send"]
        assert send.status.is_ok is False
        assert send.status.description is None
        assert send.attributes is not None and send.attributes["error.type"] == "SMTPDataError"
        [step] = [span for span in spans if span.name == "job run_action"]
        assert step.context.trace_id == int(TRACE_ID, 16)


class TestOff:
    async def test_jobs_carry_no_trace_context_when_tracing_is_off(
        self, client: httpx.AsyncClient, auth: Auth, engine: AsyncEngine
    ) -> None:
        assert not tracing.enabled()
        await post_welcomed_patient(client, auth)
        async with engine.connect() as conn:
            rows = (await conn.execute(select(Job.kind, Job.request_id, Job.traceparent))).all()
        assert [tuple(row) for row in rows] == [("dispatch_event", REQUEST_ID, None)]


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on localhost: POST /v1/traces, protobuf bodies."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                if self.headers.get("Content-Type") == "application/x-protobuf":
                    receiver.requests.append(ExportTraceServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[str, Any]]:
        """(service.name, span) for every span received."""
        out = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next(
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                )
                for scope_spans in resource_spans.scope_spans:
                    out.extend((service, span) for span in scope_spans.spans)
        return out


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


class TestOtlpExport:
    async def test_the_trace_reaches_an_otlp_http_receiver(
        self,
        receiver: OtlpReceiver,
        monkeypatch: pytest.MonkeyPatch,
        traced_settings: Settings,
        engine: AsyncEngine,
        clock: FrozenClock,
        auth: Auth,
    ) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "careflow-test")
        app = traced_app(traced_settings, engine, clock)
        try:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await post_welcomed_patient(client, auth)
                await drain(client, traced_settings, clock)
            tracing.flush()
        finally:
            tracing.shut_down()

        assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
        received = receiver.spans()
        trace = [span for _, span in received if span.trace_id.hex() == TRACE_ID]
        names = {span.name for span in trace}
        assert {"POST /v1/events", "job dispatch_event", "job run_action", "smtp send"} <= names
        assert {service for service, _ in received} == {"careflow-test"}
        for span in trace:
            for attribute in span.attributes:
                for secret in PATIENT_VALUES:
                    assert secret not in str(attribute.value), (span.name, attribute.key)
