"""Traces (``careflow.tracing``): one ingested event is one trace, from the request that
accepted it to the SMTP send of its email, and no span carries patient data.

Once with an in-memory exporter (every span, as it ends), once with the real OTLP/HTTP
exporter against a receiver in the test that decodes what arrives with opentelemetry-proto.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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
from tests.conftest import TEST_SECRET, make_settings
from tests.fixtures.database import database_env
from tests.fixtures.factories import EVENTS, PATIENT, Auth, create_rule, onboarded
from tests.fixtures.smtp import SmtpServer
from tests.fixtures.twilio import TwilioFake
from tests.jobs.conftest import eventually

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


async def post_welcomed_patient(
    client: httpx.AsyncClient, auth: Auth, action: str = "send_email"
) -> None:
    """A welcome rule (an email, or an SMS), then one onboarding event sent inside the
    caller's trace."""
    await create_rule(client, auth, actions=[{"type": action, "template": "welcome_patient"}])
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

    async def test_the_twilio_call_is_a_span_of_the_step(
        self,
        database_url: str,
        twilio: TwilioFake,
        engine: AsyncEngine,
        clock: FrozenClock,
        auth: Auth,
    ) -> None:
        settings = make_settings(
            database_url,
            tracing="otlp",
            sms_provider="twilio",
            twilio_account_sid="AC123",
            twilio_auth_token="secret-token",
            twilio_from="+15550001111",
            twilio_base_url=twilio.base_url,
        )
        memory = InMemorySpanExporter()
        tracing.configure_tracing(settings, exporter=memory)
        try:
            app = traced_app(settings, engine, clock)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await post_welcomed_patient(client, auth, action="send_sms")
                await drain(client, settings, clock)
        finally:
            tracing.shut_down()

        assert len(twilio.requests) == 1
        spans = memory.get_finished_spans()
        trace = [span for span in spans if span.context.trace_id == int(TRACE_ID, 16)]
        step = one_of(trace, "job run_action")
        call = one_of(trace, "POST")
        assert call.kind is SpanKind.CLIENT
        assert call.parent is not None and call.parent.span_id == step.context.span_id
        for span in spans:
            for value in values_of(span):
                for secret in PATIENT_VALUES:
                    assert secret not in value, (span.name, value)

    async def test_query_strings_stay_out_of_request_spans(
        self,
        exporter: InMemorySpanExporter,
        traced_client: httpx.AsyncClient,
        auth: Auth,
    ) -> None:
        response = await traced_client.get(
            "/v1/automations/rules", params={"q": PATIENT["email"]}, headers=auth("admin")
        )
        assert response.status_code in (200, 400), response.text
        [request] = [span for span in exporter.get_finished_spans() if span.kind is SpanKind.SERVER]
        assert request.attributes is not None
        assert any(str(v).startswith("/v1/automations/rules") for v in request.attributes.values())
        for value in values_of(request):
            assert PATIENT["email"] not in value and "%40" not in value, value


class TestSettings:
    def test_tracing_is_off_unless_asked_for(self, database_url: str) -> None:
        assert make_settings(database_url).tracing == "none"
        assert make_settings(database_url, tracing="").tracing == "none"
        with pytest.raises(ValueError, match="tracing"):
            make_settings(database_url, tracing="zipkin")

    def test_only_http_protobuf_is_exported(
        self, database_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        with pytest.raises(tracing.TracingUnavailable, match="http/protobuf"):
            tracing.configure_tracing(make_settings(database_url, tracing="otlp"))
        assert not tracing.enabled()


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


def spawn_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``careflow worker`` in its own process, writing its output to ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "careflow.cli", "worker", "--concurrency", "2"],
            env=env,
            cwd=log_path.parent,  # away from any .env in the checkout
            stdout=log,
            stderr=subprocess.STDOUT,
        )


class TestAcrossProcesses:
    async def test_a_worker_process_continues_the_requests_trace_and_logs_its_id(
        self,
        receiver: OtlpReceiver,
        exporter: InMemorySpanExporter,
        traced_client: httpx.AsyncClient,
        traced_settings: Settings,
        auth: Auth,
        smtp: SmtpServer,
        tmp_path: Path,
    ) -> None:
        """The API here (in-memory exporter), ``careflow worker`` in its own process
        exporting over OTLP/HTTP: its job spans are children of the request's span."""
        await post_welcomed_patient(traced_client, auth)
        [request] = [s for s in exporter.get_finished_spans() if s.name == "POST /v1/events"]

        env = {
            **os.environ,
            "CAREFLOW_DATABASE_URL": traced_settings.database_url,
            **database_env(traced_settings.database_url),
            "CAREFLOW_ENV": "test",
            "CAREFLOW_JWT_SECRET": TEST_SECRET,
            "CAREFLOW_SMTP_URL": smtp.url,
            "CAREFLOW_LOG_LEVEL": "INFO",
            "CAREFLOW_TRACING": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_SERVICE_NAME": "careflow-worker",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        }
        log_path = tmp_path / "worker.log"
        proc = spawn_worker(env, log_path)
        try:

            def sent() -> bool:
                return any(span.name == "smtp send" for _, span in receiver.spans())

            await eventually(sent, within=30, interval=0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        spans = {
            span.name: span for service, span in receiver.spans() if service == "careflow-worker"
        }
        dispatch, step, send = (
            spans["job dispatch_event"],
            spans["job run_action"],
            spans["smtp send"],
        )
        assert {dispatch.trace_id.hex(), step.trace_id.hex(), send.trace_id.hex()} == {TRACE_ID}
        assert dispatch.parent_span_id == request.context.span_id.to_bytes(8, "big")
        assert step.parent_span_id == dispatch.span_id
        assert send.parent_span_id == step.span_id

        lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
        [sent_line] = [line for line in lines if line["event"] == "email_sent"]
        assert sent_line["request_id"] == REQUEST_ID
